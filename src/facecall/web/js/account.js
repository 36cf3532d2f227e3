// The account panel of the home screen: my display name, my password, deleting my account; and
// the "Verify a contact" panel beside it: the safety number with someone, to compare once.

import { SafetyNumberError, addStyles, element, safetyNumberWith, setVerified, showNumber, statusOf }
  from "./safety-number.js";
import { watchCallSafety } from "./security-code.js";

const $ = (id) => document.getElementById(id);

export class AccountPanel {
  /**
   * @param {object} o
   * @param {import('./api.js').Api} o.api
   * @param {() => object} o.session   {account, deviceId, user}
   * @param {(user: object) => void} o.onRenamed
   * @param {() => void} o.onDevicesChanged
   * @param {() => void} o.onDeleted
   */
  constructor({ api, session, onRenamed, onDevicesChanged, onDeleted }) {
    this.api = api;
    this.session = session;
    this.onRenamed = onRenamed;
    this.onDevicesChanged = onDevicesChanged;
    this.onDeleted = onDeleted;
    $("name-form").onsubmit = (event) => this.rename(event);
    $("password-form").onsubmit = (event) => this.changePassword(event);
    $("delete-form").onsubmit = (event) => this.deleteAccount(event);
    this.contacts = new ContactCheck({ api, session });
    // the safety number's line of the call screen, for this session's device
    watchCallSafety({
      identity: () => (session() ? session().identity : null),
      remoteDevice: async () => document.getElementById("security").dataset.device || null,
    });
  }

  /** Show the signed-in user's values and no stale outcome. */
  show() {
    const s = this.session();
    if (!s) return;
    $("account-display-name").value = s.user.display_name;
    $("password-form-username").value = s.user.username;
    $("delete-password").value = "";
    $("delete-account").open = false;
    this.say("", "");
    this.contacts.refresh();
  }

  say(error, done, field = null) {
    $("account-error").textContent = error;
    $("account-done").textContent = done;
    for (const id of ["account-display-name", "current-password", "new-password", "delete-password"]) {
      const input = $(id);
      if (input === field) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", "account-error");
      } else {
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    }
    if (field) field.focus();
  }

  async rename(event) {
    event.preventDefault();
    const name = $("account-display-name").value.trim();
    if (!name) return this.say("Enter a display name.", "", $("account-display-name"));
    $("save-name").disabled = true;
    try {
      const user = await this.api.rename(this.session().account, name);
      this.onRenamed(user);
      $("account-display-name").value = user.display_name;
      this.say("", "Display name saved.");
    } catch (error) {
      const field = error.status === 422 ? $("account-display-name") : null;
      if (error.status !== 401) this.say(`Could not save the name: ${error.message}`, "", field);
    } finally {
      $("save-name").disabled = false;
    }
  }

  async changePassword(event) {
    event.preventDefault();
    const current = $("current-password").value;
    const next = $("new-password").value;
    const others = $("sign-out-others").checked;
    if (!current) return this.say("Enter your current password.", "", $("current-password"));
    if (next.length < 8) {
      return this.say("Choose a new password of at least 8 characters.", "", $("new-password"));
    }
    const question = "Sign out all your other devices? They stop ringing until you sign in on them again.";
    if (others && !window.confirm(question)) return;
    $("change-password").disabled = true;
    try {
      const s = this.session();
      await this.api.changePassword(s.account, current, next, others, s.deviceId);
      $("current-password").value = "";
      $("new-password").value = "";
      $("sign-out-others").checked = false;
      this.say("", others ? "Password changed. Your other devices are signed out."
        : "Password changed. Browsers signed in with the old password must sign in again.");
      if (others) this.onDevicesChanged();
    } catch (error) {
      if (error.status === 403) this.say("The current password is wrong.", "", $("current-password"));
      else if (error.status !== 401) {
        const field = error.status === 422 ? $("new-password") : null;
        this.say(`Could not change the password: ${error.message}`, "", field);
      }
    } finally {
      $("change-password").disabled = false;
    }
  }

  async deleteAccount(event) {
    event.preventDefault();
    const password = $("delete-password").value;
    if (!password) return this.say("Enter your password to delete your account.", "", $("delete-password"));
    const s = this.session();
    if (!window.confirm(`Delete the account @${s.user.username} for good? This cannot be undone.`)) return;
    $("delete-account-button").disabled = true;
    try {
      await this.api.deleteAccount(s.account, password);
    } catch (error) {
      if (error.status === 403) this.say("The password is wrong.", "", $("delete-password"));
      else if (error.status !== 401) this.say(`Could not delete the account: ${error.message}`, "");
      return;
    } finally {
      $("delete-account-button").disabled = false;
    }
    $("delete-password").value = "";
    this.onDeleted();
  }
}

/** The "Verify a contact" panel (built here, after the account panel): a username gives the
 *  safety number of the signed-in user and that person (safety-number.js), in large groups to
 *  read aloud, with whether it was compared; "Mark as verified" remembers it, "Unmark" forgets. */
export class ContactCheck {
  /**
   * @param {object} o
   * @param {import('./api.js').Api} o.api
   * @param {() => object} o.session   {account, userId, identity}
   */
  constructor({ api, session }) {
    this.api = api;
    this.session = session;
    this.shown = null; // {userId, username, number, status} on screen
    this.asked = 0; // the latest lookup: an older one's answer is dropped
    if (!$("verify-contact")) $("account-title").closest(".panel").after(this.build());
    $("verify-form").onsubmit = (event) => {
      event.preventDefault();
      this.look($("verify-username").value);
    };
    $("verify-mark").onclick = () => this.mark(true);
    $("verify-unmark").onclick = () => this.mark(false);
    $("verify-username").value = ""; // a new session: nothing of the last one's
    this.show(null);
  }

  /** The panel's elements. */
  build() {
    addStyles();
    return element("section", { id: "verify-contact", className: "panel", "aria-labelledby": "verify-title" },
      element("h2", { id: "verify-title", textContent: "Verify a contact" }),
      element("p", { className: "hint", textContent: "Compare your safety number with someone once — "
        + "side by side, or read aloud on a call. If it is the same on both screens, nobody, not even "
        + "the server, is in the middle of your calls with them." }),
      element("form", { id: "verify-form", noValidate: true },
        element("label", { htmlFor: "verify-username", textContent: "Username" }),
        element("div", { className: "row" },
          element("input", { id: "verify-username", autocomplete: "off", autocapitalize: "none",
            spellcheck: false, maxLength: 32, placeholder: "e.g. bob" }),
          element("button", { type: "submit", id: "verify-show", className: "secondary",
            textContent: "Show number" }))),
      element("p", { id: "verify-error", className: "form-error", role: "alert" }),
      element("div", { id: "verify-result", hidden: true },
        element("p", { id: "verify-status", className: "safety-status", role: "status" }),
        element("div", { id: "verify-number" }),
        element("div", { className: "safety-actions" },
          element("button", { type: "button", id: "verify-mark", className: "primary",
            textContent: "Mark as verified" }),
          element("button", { type: "button", id: "verify-unmark", className: "ghost",
            textContent: "Unmark" }))));
  }

  /** Show the safety number with ``username``; or say why there is none. */
  async look(username) {
    username = String(username || "").trim().toLowerCase();
    const s = this.session();
    const asked = ++this.asked;
    this.show(null);
    if (!s) return;
    if (!username) return this.error("Enter the username of the person to verify.");
    $("verify-show").disabled = true;
    try {
      const shown = await this.numberWith(s, username);
      if (asked === this.asked && this.session() === s) this.show(shown);
    } catch (error) {
      if (asked === this.asked && this.session() === s && error.message) this.error(error.message);
    } finally {
      if (asked === this.asked) $("verify-show").disabled = false;
    }
  }

  /** The safety number of session ``s``'s user and ``username``: {userId, username, number,
   *  status}; an Error says why there is none (an empty message: nothing to say, signed out). */
  async numberWith(s, username) {
    let user;
    try {
      user = await this.api.user(s.account, username);
    } catch (error) {
      if (error.status === 401) throw new Error(""); // signed out: app.js says so
      if (error.status === 404) throw new Error(`No user named ${username}.`);
      if (error.status === 422) throw new Error(`“${username}” is not a valid username.`);
      throw new Error(`Could not look up ${username}: ${error.message}`);
    }
    if (user.id === s.userId) {
      throw new Error("That is you. A safety number is between you and someone else: enter their username.");
    }
    try {
      return { ...(await safetyNumberWith(s.identity, user.id, user.username)), username: user.username };
    } catch (error) {
      if (!(error instanceof SafetyNumberError)) throw new Error(`Could not work out the safety number: ${error.message}`);
      throw new Error(error.refused ? `No safety number with ${user.username}: ${error.message}` : error.message);
    }
  }

  /** Show ``shown`` (null: nothing) and no error. */
  show(shown) {
    this.shown = shown;
    this.error("");
    $("verify-result").hidden = !shown;
    if (!shown) return;
    const { username, status } = shown;
    $("verify-status").dataset.status = status;
    $("verify-status").textContent = {
      verified: `Verified: you compared this number with ${username}.`,
      changed: `Safety number changed since you verified it: ${username} or you added or removed a `
        + "device, or someone is in the middle. Compare it again.",
      unverified: `Not verified yet. Compare these digits with ${username}, then mark them as verified.`,
    }[status];
    showNumber($("verify-number"), shown.number);
    $("verify-mark").hidden = status === "verified";
    $("verify-unmark").hidden = status === "unverified";
  }

  error(text) {
    $("verify-error").textContent = text;
    const input = $("verify-username");
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  /** Mark the number on screen as compared (``on``), or forget the one marked. */
  mark(on) {
    const s = this.session();
    const shown = this.shown;
    if (!s || !shown) return;
    setVerified(s.userId, shown.userId, on ? shown.number : null, shown.unlisted);
    const unlisted = on ? [] : shown.unlisted; // marking forgets the devices the list left out
    this.show({ ...shown, unlisted, status: statusOf(s.userId, shown.userId, shown.number, unlisted) });
    $(on ? "verify-unmark" : "verify-mark").focus();
  }

  /** The number on screen anew (the keys or its mark may have changed meanwhile, in a call). */
  refresh() {
    if (this.shown) this.look(this.shown.username);
  }
}
