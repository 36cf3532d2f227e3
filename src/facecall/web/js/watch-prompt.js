// Asking first (docs/shareplay.md): when the other person shares a video, nothing is loaded from
// its address until this person says so. The prompt names who shares it, its title (text only:
// the other side typed it) and the host it would be loaded from — what trust is judged by — with
// Watch and Not now. watch-together.js decides when it shows; this module only draws it.

const $ = (id) => document.getElementById(id);

/** The host a video would be loaded from ("videos.example", "127.0.0.1:8000"), as the browser
 *  reads the address (user names before an "@" are not the host; a Unicode name shows as the
 *  browser sends it, xn--…). */
export function videoHost(url) {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** A form field, or the "Watch together" dialog, where the person is typing: a prompt that
 *  appears then does not take the focus away. */
function typing(element) {
  return !!element && (element.matches("input, textarea, select") || !!element.closest("#watch-ask"));
}

function shown(element) {
  return !!element && element.isConnected && element.checkVisibility();
}

/** The prompt (#watch-offer, a non-modal dialog in the call screen). */
export class WatchPrompt {
  /** @param {{watch: () => void, later: () => void, other: () => void}} actions  what its
   *  buttons do: join, decline for now, share another video instead. */
  constructor(actions) {
    this.el = $("watch-offer");
    this.showing = null; // the activity {id, url} shown, and whether the person opened it (asked)
    this.back = null; // where the focus was when it opened
    // assigned, not added: signing in again in this page makes new controllers
    $("watch-offer-watch").onclick = () => actions.watch();
    $("watch-offer-later").onclick = () => actions.later();
    $("watch-offer-other").onclick = () => actions.other();
    this.el.onkeydown = (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        actions.later();
      }
    };
  }

  /** Ask ``name`` (the other person) about ``activity``; ``asked``: the person opened it again
   *  ("Join bob's video"), so the focus goes to Watch. Already open for it: the words only. */
  show(name, activity, title, { asked = false } = {}) {
    const host = videoHost(activity.url);
    const who = document.createElement("strong");
    who.textContent = name;
    const what = document.createElement("bdi"); // a title in another direction stays inside its quotes
    what.textContent = title;
    $("watch-offer-text").replaceChildren(who, " wants to watch “", what, "” together");
    $("watch-offer-host").textContent = host;
    $("watch-offer-plain").hidden = !activity.url.startsWith("http:");
    $("watch-offer-help").textContent = `Watch loads the video from ${host} on this device (that site`
      + " sees your IP address, as any site you open does). Not now loads nothing; the call goes on,"
      + ` and “Join ${name}'s video” brings this back.`;
    const wasHidden = this.el.hidden;
    const fresh = wasHidden || this.showing.id !== activity.id || this.showing.url !== activity.url;
    this.showing = { id: activity.id, url: activity.url, asked: asked || (!fresh && this.showing.asked) };
    $("watch-offer-other").hidden = !this.showing.asked; // sharing another video instead: once asked
    if (!fresh && !asked) return;
    this.el.hidden = false;
    const active = document.activeElement;
    if (wasHidden && !this.el.contains(active)) this.back = active;
    if (asked) $("watch-offer-watch").focus();
    else if (wasHidden && !typing(active)) this.el.focus();
  }

  /** Close it; the focus, if it was in the prompt, goes to ``focusTo`` (else back where it was,
   *  else to "Watch together"). */
  hide(focusTo = null) {
    this.showing = null;
    if (this.el.hidden) return;
    const inside = this.el.contains(document.activeElement);
    this.el.hidden = true;
    const back = this.back;
    this.back = null;
    if (!inside) return;
    const target = [focusTo, back === document.body ? null : back, $("watch-together")].find(shown);
    if (target) target.focus();
  }

  get open() {
    return !this.el.hidden;
  }
}
