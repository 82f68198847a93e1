// The clinic console's little script: the camera on the scan page, live 一验证 status, countdowns, refresh.
"use strict";

function setupCamera() {
  const button = document.getElementById("camera");
  if (!button) return;
  const field = document.getElementById("code");
  const video = document.getElementById("preview");
  const note = document.getElementById("camera-note");
  const label = button.textContent;
  let stream = null;
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices) {
    button.disabled = true;
    note.textContent = button.dataset.none;
    return;
  }
  const stop = () => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.hidden = true;
    button.textContent = label;
  };
  button.addEventListener("click", async () => {
    if (stream) { stop(); return; }
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    button.textContent = button.dataset.stop;
    const look = async () => {
      if (!stream) return;
      const found = await detector.detect(video).catch(() => []);
      if (found.length) {
        field.value = found[0].rawValue;
        stop();
        field.form.submit();
        return;
      }
      requestAnimationFrame(look);
    };
    look();
  });
}

// A USB scanner types into the focused field and presses Enter: keep the field focused between scans.
function keepScanFieldFocused() {
  const field = document.getElementById("code");
  if (!field) return;
  field.focus();
  document.addEventListener("keydown", (event) => {
    const active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT")) return;
    if (event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey) field.focus();
  });
}

function formatLeft(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  const minutes = Math.floor(seconds / 60);
  return `${String(minutes).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
}

// Countdowns: the server says when each observation ends (data-ends, ISO 8601) and what to say then.
function setupCountdowns() {
  const clocks = Array.from(document.querySelectorAll("[data-ends]"));
  if (!clocks.length) return;
  const offset = Number(document.body.dataset.serverNow || Date.now()) - Date.now();
  const tick = () => {
    const now = Date.now() + offset;
    for (const clock of clocks) {
      const left = Date.parse(clock.dataset.ends) - now;
      clock.textContent = left > 0 ? formatLeft(left) : clock.dataset.over;
      clock.classList.toggle("over", left <= 0);
    }
  };
  tick();
  setInterval(tick, 1000);
}

// 一验证: poll the visit's small status endpoint; when the family (or staff) confirmed, reload to show 接种.
function setupStatusPoll() {
  const box = document.querySelector("[data-poll]");
  if (!box) return;
  const url = box.dataset.poll;
  const initial = box.dataset.step;
  const poll = async () => {
    try {
      const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) { location.reload(); return; }
      if (response.ok) {
        const status = await response.json();
        box.textContent = status.text;
        if (status.step !== initial) { location.reload(); return; }
      }
    } catch (error) { /* the next poll tries again */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
}

// Lists (the queue, observation, the summary) refresh themselves unless someone is typing.
function setupRefresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  setInterval(() => {
    const active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT")) return;
    // Marked as automatic: it shows the latest without counting as use (the idle sign-out still comes).
    const url = new URL(location.href);
    url.searchParams.set("auto", "1");
    url.searchParams.delete("none");
    location.replace(url.toString());
  }, seconds * 1000);
}

// A different vaccine or dose than the due list's suggestion needs a reason: show and require the field.
function setupOverride() {
  const select = document.getElementById("dose-choice");
  const reason = document.getElementById("override-reason");
  if (!select || !reason) return;
  const update = () => {
    const overriding = select.value === "other";
    document.querySelectorAll("[data-override]").forEach((element) => { element.hidden = !overriding; });
    reason.required = overriding;
  };
  select.addEventListener("change", update);
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  setupCamera();
  keepScanFieldFocused();
  setupCountdowns();
  setupStatusPoll();
  setupRefresh();
  setupOverride();
});
