// The SFrame workers (sframe-worker.js) of this page's calls, one made ahead of time: a call's
// keys take the one that is ready and the next is made at once. A module worker fetches its
// script (and what it imports) from the server when it is made, and a call needs its worker
// at moments the server may be away (a node restarting as the call connects or resumes); the
// spare was fetched while the page could reach the server. A worker that fails (its script
// did not load) is never handed out again; the keys that got one and see it fail say so
// (GroupE2EE's onFailure). A worker, once its script is loaded, needs the server no more.

const URL_ = new URL("./sframe-worker.js", import.meta.url);

let spare = null; // {worker, failed}

function make() {
  const entry = { worker: new Worker(URL_, { type: "module", name: "facecall sframe" }), failed: false };
  entry.worker.addEventListener("error", () => {
    entry.failed = true;
    if (spare === entry) spare = null;
  });
  return entry;
}

/** Make the spare worker now, if there is none (the page calls it once it is up). */
export function prepareWorker() {
  if (!spare && typeof Worker === "function") spare = make();
}

/** A worker for one call's keys: the spare (unless it failed), or a new one; a new spare is
 *  made for the next. */
export function takeWorker() {
  const entry = spare && !spare.failed ? spare : make();
  spare = null;
  prepareWorker();
  return entry.worker;
}
