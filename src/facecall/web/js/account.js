// The account panel of the home screen: my display name, my password, deleting my account.

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
