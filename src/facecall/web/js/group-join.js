// Who is in a call, and when it becomes a group call: the part of a Call (call.js) that is only
// about group calls. A call with three or more people in it is a group call (the SDK's rule,
// facecall.client.group): its media goes through the SFU (a GroupCall, group-call.js), its P2P
// connection closes and P2P negotiation is ignored from then on. Here: the other people joined
// in the call, joining the SFU once they are three (or at once, for a call that already went
// through it), the GroupCall's events wired to the call and the page (the tiles, the media
// connection's state, "Reconnected" after it joined again, newcomers told what is off), and
// what a group call does with the call's events (`sfu.*` and `call.key`, someone leaving or
// moving to another device, a signaling reconnect the server could not resume).

import { SignalingError } from "./signaling.js";
import { GroupCall, REJOIN_PAUSES_MS, groupMessage } from "./group-call.js";

/** The people of one call and its way into group media; made and owned by a Call. */
export class GroupJoin {
  /** @param {import('./call.js').Call} call */
  constructor(call) {
    this.call = call;
    this.others = new Map(); // user id -> device id: the other people joined in the call
    this.was = false; // the call's media went through the SFU (a reload rejoins it, not P2P)
  }

  /** ``userId`` is in the call on ``deviceId`` (answered, or there when this device came). */
  noteJoined(userId, deviceId) {
    const own = this.call.host.tokens().userId;
    if (userId && userId !== own) this.others.set(userId, deviceId);
  }

  /** How many people are in the call, this one included. */
  get people() {
    return this.others.size + 1;
  }

  /** Three or more people: a group call. Join the SFU (once), unless the camera and microphone
   *  are not ready yet (then whoever made them ready calls this again). */
  maybe() {
    const call = this.call;
    if (call.group || call.ended || !call.current || !call.id || call.preparing || this.people < 3
        || call.phase === "calling" || call.phase === "ringing" || !call.host.media.audioTrack) return;
    this.start();
  }

  /** Send and receive the call's media through the SFU (`sfu.join`); once the SFU took this
   *  device, the P2P connection closes for good. A refusal leaves the call as it was (its P2P
   *  media goes on, if it had any) with the reason on screen. */
  async start() {
    const call = this.call;
    if (call.group || call.ended) return;
    const group = new GroupCall({ call });
    call.group = group;
    const view = call.host.view;
    group.addEventListener("slots", () => {
      if (call.group === group) view.groupTiles(call, group);
    });
    group.addEventListener("speaker", () => { // the tile of whoever speaks now stands out
      if (call.group === group) view.groupTiles(call, group);
    });
    group.addEventListener("state", (e) => {
      if (call.group === group) call.onMediaState(e.detail);
    });
    group.addEventListener("rejoined", () => { // the SFU lost this device, which joined again
      if (call.group !== group || call.ended) return;
      call.renewed = true; // "Reconnected" once its media connects
      view.showGroup(call, group); // the new connection's slots and audio
    });
    group.addEventListener("members", () => {
      const media = call.host.media;
      // a newcomer has not heard that we are muted or our camera is off
      if (call.group === group && (media.muted || (call.media === "video" && (media.cameraOff || media.screen)))) {
        call.sendMediaState();
      }
    });
    call.watchUnlessWatched();
    try {
      await group.join();
    } catch (error) {
      if (call.group === group) call.group = null;
      if (call.ended || !call.current) return;
      if (error instanceof SignalingError && error.code === "connection_lost") {
        // cut short by a reconnect the server could not resume (it may have restarted): again
        setTimeout(() => {
          if (!call.group && !call.ended && call.current) this.start();
        }, REJOIN_PAUSES_MS[0]);
        return;
      }
      console.warn("facecall: group media", error);
      view.error(`The group call's media could not start: ${groupMessage(error, call.name)}`);
      return;
    }
    if (call.group !== group || call.ended) return;
    this.was = true;
    call.awaitingOffer = null;
    call.dropPeer(); // the SFU took this device: no P2P in this call any more
    call.startStats();
    view.showGroup(call, group);
  }

  /** `sfu.slots`, `sfu.members`, `sfu.speaker` or `call.key` for this call. */
  onEvent(event) {
    if (this.call.group) this.call.group.onEvent(event);
  }

  /** Someone left the call (`call.participant_left`). */
  onParticipantLeft(event) {
    if (this.others.get(event.user_id) !== event.device_id) return;
    this.others.delete(event.user_id);
    const group = this.call.group;
    if (group) this.call.host.view.groupTiles(this.call, group);
  }

  /** Someone moved the call to another of their devices (`call.handed_off`): they are in it
   *  there now. */
  onHandedOff(event) {
    if (this.others.has(event.user_id) && this.others.get(event.user_id) === event.from_device) {
      this.others.set(event.user_id, event.to_device);
    }
  }

  /** After a reconnect the server could not resume (``view``: the call in its welcome): the
   *  people in it now, and the group media joined again (the server may have restarted: its
   *  SFU's rooms are gone) or at last (a third person answered meanwhile). Whether the call's
   *  media is the group's (the P2P side has nothing to catch up then). */
  resync(view) {
    const call = this.call;
    for (const p of view.participants || []) this.noteJoined(p.user_id, p.device_id);
    if (call.group) {
      call.group.lost("the server could not resume this device's session");
      return true;
    }
    this.maybe();
    return !!call.group;
  }
}
