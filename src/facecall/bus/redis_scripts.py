"""The Lua scripts of :class:`facecall.bus.redis_bus.RedisBus` (one round trip each).

Redis runs a script atomically (EVALSHA; nothing else runs meanwhile), so a script reads and
writes a mailbox as one step. The keys of one device (``P`` is the bus's prefix):

``P d:<device>:box``  HASH ``last`` (newest seq assigned), ``ended`` ("1" after
                      ``end_session``), ``renumbered`` (newest seq a non-complete replay numbered
                      anew: those are handed out by the replay, never pushed)
``P d:<device>:msgs`` LIST of ``"<kept at, ms of Redis TIME>:<UTF-8 JSON text>"``, oldest first.
                      Its seqs are consecutive and end at ``last``: every write appends at the
                      right (RPUSH) or drops from the left (LPOP, LTRIM) or all (DEL), so the
                      left one's seq is ``last - LLEN + 1`` and ``last - LLEN`` is the newest
                      seq trimmed (``trimmed_through`` of InProcessBus).
``P d:<device>:reg``  STRING ``"<node id>\\n<connection id>"``: where the device is attached
``P d:<device>:r:<request id>`` STRING, a request claimed across nodes: empty while a node acts
                      on it (PX the claim's lease), then its ``ok`` reply (PX ``ttl``)

Every script that writes a mailbox refreshes PEXPIRE on it: the list lives ``ttl`` s (+1 s)
after its newest message, the box ``keep`` s after its last write, so an idle device's keys go.

Texts are built by string ops: Python sends the message's JSON without its closing ``}`` (with
a ``,`` when the object is not empty) and the script appends ``"seq":N}``. Seqs are formatted
with ``%d``: Lua numbers are doubles, exact below 2**53 (seqs are microseconds, see
``memory.first_seq``); ``tostring`` would print them in ``%.14g`` exponent form.

Pub/sub payloads (built here and in Python; ``<x>`` is ``#x .. ':' .. x``, binary-safe):
``m<seq><device>text`` a delivery, ``k<code><device>reason`` a kick, ``r<device>conn`` "your
registration was replaced", ``a<node><topic>key`` an announcement, ``b<token>`` a barrier.
"""

from __future__ import annotations


def to_bytes(text: str) -> bytes:
    """Any Python str as bytes (lone surrogates too: a device id is opaque)."""
    return text.encode("utf-8", "surrogatepass")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def field(data: bytes) -> bytes:
    return b"%d:%s" % (len(data), data)


def fields(data: bytes, count: int) -> list[bytes]:
    """``count`` length-prefixed fields from ``data`` (after its kind byte), then the rest."""
    out, pos = [], 1
    for _ in range(count):
        colon = data.index(b":", pos)
        end = colon + 1 + int(data[pos:colon])
        out.append(data[colon + 1:end])
        pos = end
    out.append(data[pos:])
    return out


def kept_text(element: bytes) -> bytes:
    """The JSON text of a mailbox list element (``"<ms>:<text>"``)."""
    return element[element.index(b":") + 1:]


_COMMON = """
local function int(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function field(s) return #s .. ':' .. s end
local function node_of(reg) return string.sub(reg, 1, string.find(reg, '\\n', 1, true) - 1) end
-- a box that expired (or never was) starts counting at ARGV first; a list left over goes
local function ensure(box, msgs, first)
  if redis.call('HEXISTS', box, 'last') == 0 then
    redis.call('DEL', msgs)
    redis.call('HSET', box, 'last', first)
  end
end
-- drop from the left what is over limit or kept more than ttl_ms ago (InProcessBus._trim)
local function trim(msgs, limit, ttl_ms, now)
  if limit < 1 then redis.call('DEL', msgs) return end
  if redis.call('LLEN', msgs) > limit then redis.call('LTRIM', msgs, -limit, -1) end
  while true do
    local left = redis.call('LINDEX', msgs, 0)
    if not left then return end
    local at = tonumber(string.sub(left, 1, string.find(left, ':', 1, true) - 1))
    if now - at <= ttl_ms then return end
    redis.call('LPOP', msgs)
  end
end
"""

DELIVER = _COMMON + """
-- KEYS box, msgs, reg of each delivery in turn. ARGV first, limit, ttl_ms, msgs_px, box_px,
-- node, channel prefix, broadcast channel, an announcement to PUBLISH on it first ('' none),
-- then head, device, if_attached ('1': only to a device registered now) of each delivery.
-- Returns {seq, where} of each in turn, flat: where 0 attached nowhere, 1 here (push it),
-- 2 published, 3 dropped (if_attached, and registered nowhere: seq 0).
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
local limit, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {}
for i = 1, #KEYS / 3 do
  local box, msgs = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local head, device, if_attached = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
  local reg = redis.call('GET', KEYS[3 * i])
  if not reg and if_attached == '1' then
    out[2 * i - 1], out[2 * i] = 0, 3
  else
    ensure(box, msgs, ARGV[1])
    local seq = int(redis.call('HINCRBY', box, 'last', 1))
    local text = head .. '"seq":' .. seq .. '}'
    redis.call('RPUSH', msgs, int(now) .. ':' .. text)
    trim(msgs, limit, ttl_ms, now)
    redis.call('PEXPIRE', msgs, ARGV[4])
    redis.call('PEXPIRE', box, ARGV[5])
    local where = 0
    if reg then
      local node = node_of(reg)
      if node == ARGV[6] then where = 1 else
        redis.call('PUBLISH', ARGV[7] .. node, 'm' .. field(seq) .. field(device) .. text)
        where = 2
      end
    end
    out[2 * i - 1], out[2 * i] = seq, where
  end
end
return out
"""

ATTACH = _COMMON + """
-- KEYS box, msgs, reg. ARGV first, box_px, reg value, reg_px, node, channel prefix, device.
-- Registers the connection (replacing any) and returns the newest seq assigned before it: every
-- later delivery is routed here. A node whose registration this replaces is told ('r').
local box, msgs = KEYS[1], KEYS[2]
ensure(box, msgs, ARGV[1])
redis.call('PEXPIRE', box, ARGV[2])
local old = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
if old and old ~= ARGV[3] then
  local node = node_of(old)
  if node ~= ARGV[5] then
    local conn = string.sub(old, #node + 2)
    redis.call('PUBLISH', ARGV[6] .. node, 'r' .. field(ARGV[7]) .. conn)
  end
end
return redis.call('HGET', box, 'last')
"""

DROP_IF = """
-- KEYS k1..kn, ARGV v1..vn: DEL each key whose value is still its v (compare-and-delete).
local dropped = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key) dropped = dropped + 1 end
end
return dropped
"""

DETACH = """
-- KEYS reg. ARGV connection id: DEL the registration if it is that connection's (on any node).
local reg = redis.call('GET', KEYS[1])
if reg and string.sub(reg, string.find(reg, '\\n', 1, true) + 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

RENEW_IF = """
-- KEYS lock, ARGV token, px: extend the lease if the token still holds the lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

REPLAY = _COMMON + """
-- KEYS box, msgs. ARGV after ('' for none), first, limit, ttl_ms, box_px, carry ('1'/'0').
-- Returns {complete, last, seq of the first message, messages, LLEN}. A resume clears 'ended' and
-- returns what follows 'after'. Otherwise, with carry and unseen messages kept, those are
-- returned and nothing changes (RENUMBER finishes it); else the kept ones are dropped.
local box, msgs = KEYS[1], KEYS[2]
ensure(box, msgs, ARGV[2])
trim(msgs, tonumber(ARGV[3]), tonumber(ARGV[4]), now_ms())
redis.call('PEXPIRE', box, ARGV[5])
local last = tonumber(redis.call('HGET', box, 'last'))
local n = redis.call('LLEN', msgs)
local cut = last - n
local after = nil
if ARGV[1] ~= '' then after = tonumber(ARGV[1]) end
if after and not redis.call('HGET', box, 'ended') and cut <= after and after <= last then
  redis.call('HDEL', box, 'ended')
  return {1, int(last), int(after + 1), redis.call('LRANGE', msgs, int(after - cut), -1), n}
end
if ARGV[6] == '1' and n > 0 then
  local from = 0
  if after and after <= last and after > cut then from = after - cut end
  if from < n then
    return {0, int(last), int(cut + 1 + from), redis.call('LRANGE', msgs, int(from), -1), n}
  end
end
redis.call('DEL', msgs)
redis.call('HDEL', box, 'ended')
return {0, int(last), int(last + 1), {}, 0}
"""

RENUMBER = _COMMON + """
-- KEYS box, msgs. ARGV last, llen (as REPLAY saw them), msgs_px, box_px, heads...
-- Unless the mailbox changed since REPLAY (then 0: replay again), drop what is kept and keep
-- the heads numbered anew after last; returns 1.
local box, msgs = KEYS[1], KEYS[2]
local last = tonumber(redis.call('HGET', box, 'last'))
if last ~= tonumber(ARGV[1]) or redis.call('LLEN', msgs) ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', msgs)
local now = int(now_ms())
for i = 5, #ARGV do
  last = last + 1
  redis.call('RPUSH', msgs, now .. ':' .. ARGV[i] .. '"seq":' .. int(last) .. '}')
end
redis.call('HSET', box, 'last', int(last), 'renumbered', int(last))
redis.call('HDEL', box, 'ended')
redis.call('PEXPIRE', msgs, ARGV[3])
redis.call('PEXPIRE', box, ARGV[4])
return 1
"""

FETCH = _COMMON + """
-- KEYS box, msgs. ARGV low, high. Returns {seq of the first, messages} of those kept with
-- low <= seq <= high, leaving out the ones a replay numbered anew (they were never pushed).
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if not last then return {0, {}} end
local cut = last - redis.call('LLEN', KEYS[2])
local renumbered = tonumber(redis.call('HGET', KEYS[1], 'renumbered') or '0')
local low = math.max(tonumber(ARGV[1]), cut + 1, renumbered + 1)
local high = math.min(tonumber(ARGV[2]), last)
if low > high then return {0, {}} end
return {int(low), redis.call('LRANGE', KEYS[2], int(low - cut - 1), int(high - cut - 1))}
"""

ACK = """
-- KEYS box, msgs. ARGV seq: drop the kept messages up to seq.
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if not last then return 0 end
local n = redis.call('LLEN', KEYS[2])
local drop = math.min(tonumber(ARGV[1]) - (last - n), n)
if drop <= 0 then return 0 end
if drop >= n then redis.call('DEL', KEYS[2]) else
  redis.call('LTRIM', KEYS[2], string.format('%d', drop), -1) end
return drop
"""

END_SESSION = """
-- KEYS box: mark it (if there is one) so that its next replay is not complete.
if redis.call('HEXISTS', KEYS[1], 'last') == 1 then redis.call('HSET', KEYS[1], 'ended', '1') end
return 0
"""

CLAIM = """
-- KEYS request. ARGV lease ms. The reply kept for it ('' while a node acts on it), or nil when
-- this call claimed it.
local kept = redis.call('GET', KEYS[1])
if kept then return kept end
redis.call('SET', KEYS[1], '', 'PX', ARGV[1])
return false
"""

RELEASE = """
-- KEYS request: drop a claim still in progress (never a kept reply).
if redis.call('GET', KEYS[1]) == '' then redis.call('DEL', KEYS[1]) end
return 0
"""

KICK = _COMMON + """
-- KEYS reg. ARGV node, channel prefix, payload. 0: attached nowhere; 1: here; 2: published.
local reg = redis.call('GET', KEYS[1])
if not reg then return 0 end
local node = node_of(reg)
if node == ARGV[1] then return 1 end
redis.call('PUBLISH', ARGV[2] .. node, ARGV[3])
return 2
"""

ONLINE = _COMMON + """
-- KEYS regs. ARGV node key prefix. Returns the (1-based) indexes of the keys whose
-- registering node's heartbeat key exists.
local alive, out = {}, {}
for i, key in ipairs(KEYS) do
  local reg = redis.call('GET', key)
  if reg then
    local node = node_of(reg)
    if alive[node] == nil then alive[node] = redis.call('EXISTS', ARGV[1] .. node) == 1 end
    if alive[node] then out[#out + 1] = i end
  end
end
return out
"""

HEARTBEAT = """
-- KEYS node key, regs... ARGV node_px, reg_px, values... Sets the node key; extends this
-- node's registrations; when the node key was gone (Redis lost its data, or this node stalled
-- past its TTL) re-registers those that are missing. Returns {1 if so, the (1-based) indexes
-- of the registrations another connection holds now}.
local restore = redis.call('EXISTS', KEYS[1]) == 0
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local lost = {}
for i = 2, #KEYS do
  local now = redis.call('GET', KEYS[i])
  if now == ARGV[i + 1] then redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif not now and restore then redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[2])
  elseif now then lost[#lost + 1] = i - 1 end
end
return {restore and 1 or 0, lost}
"""
