// Progressive enhancement; every page works without this file (plain forms, 1:1 crops).
// - Consent page: sends the viewport and device pixel ratio with "Start" (viewport gate).
// - Trial page: synchronised zoom/pan of both images (wheel, pinch, drag), an A/B flicker
//   mode, the whole image and back to the 1:1 crop; answers only by the two buttons or keys;
//   records response time, viewport, pixel ratio, display mode, largest zoom, flicker
//   toggles and time the tab was hidden. A tap or click on an image never answers.
// Zoom is counted in device pixels per image pixel: 1 means one image pixel on one screen
// pixel, so on a screen with devicePixelRatio 2 the image is drawn at half its CSS size.
(function () {
  "use strict";

  var MIN_ZOOM = 0.05;
  var MAX_ZOOM = 32;
  var TAP_SLOP_PX = 6;
  var TAP_MAX_MS = 500;

  function pixelRatio() {
    return Math.min(10, Math.max(0.25, window.devicePixelRatio || 1));
  }

  // Optional fields are rendered disabled (so they are not sent without the script);
  // filling one enables it.
  function put(form, name, value) {
    var input = form.elements.namedItem(name);
    if (!input) { return; }
    input.value = String(value);
    input.disabled = false;
  }

  function putViewport(form) {
    put(form, "vw", Math.max(1, Math.round(window.innerWidth)));
    put(form, "vh", Math.max(1, Math.round(window.innerHeight)));
    put(form, "dpr", Math.round(pixelRatio() * 1000) / 1000);
  }

  var startForm = document.getElementById("start-form");
  if (startForm) {
    putViewport(startForm);
    startForm.addEventListener("submit", function () { putViewport(startForm); });
  }

  // Withdrawing ends the study for good: ask once (without the script the button just posts).
  var withdraw = document.getElementById("withdraw-form");
  if (withdraw) {
    withdraw.addEventListener("submit", function (ev) {
      if (!window.confirm("Stop taking part? The answers you gave so far are kept.")) {
        ev.preventDefault();
      }
    });
  }

  var form = document.getElementById("trial-form");
  var viewer = document.getElementById("viewer");
  if (!form || !viewer) { return; }
  document.documentElement.classList.add("js");
  document.getElementById("toolbar").hidden = false;
  document.getElementById("keys-help").hidden = false;
  var zoomLevel = document.getElementById("zoom-level");

  var panes = Array.prototype.map.call(viewer.querySelectorAll(".pane"), function (el) {
    var image = el.querySelector("image");
    image.setAttribute("x", "0");
    image.setAttribute("y", "0");
    return {
      el: el, svg: el.querySelector("svg"), image: image, side: el.getAttribute("data-side"),
      w: Number(image.getAttribute("width")), h: Number(image.getAttribute("height")),
    };
  });
  var home = { cx: Number(viewer.getAttribute("data-cx")), cy: Number(viewer.getAttribute("data-cy")) };
  var view = { cx: home.cx, cy: home.cy, zoom: 1 };
  var mode = "crop";
  var shown = "left";
  var flips = 0;
  var zoomMax = 1;
  var dpr = pixelRatio();
  var t0 = performance.now();
  var hiddenMs = 0;
  var hiddenSince = document.hidden ? performance.now() : null;
  var sent = false;

  // The clock starts when the images are on screen (or at script start if already loaded).
  window.addEventListener("load", function () { t0 = performance.now(); });
  document.addEventListener("visibilitychange", function () {
    var now = performance.now();
    if (document.hidden) {
      if (hiddenSince === null) { hiddenSince = now; }
    } else if (hiddenSince !== null) {
      hiddenMs += now - hiddenSince;
      hiddenSince = null;
    }
  });

  function box() {
    // The panes all have the same size; in flicker mode they share one cell.
    return panes[0].svg.getBoundingClientRect();
  }

  function fitZoom() {
    var r = box();
    return Math.min(r.width / panes[0].w, r.height / panes[0].h) * dpr;
  }

  // Out to the whole image (or 1:1 when the image is smaller than the pane), in to MAX_ZOOM.
  function clampZoom(z) {
    return Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, Math.min(1, fitZoom()), z));
  }

  // One shared view (centre in image pixels, zoom) drawn into every pane; each translation
  // lands on whole device pixels so 1:1 stays pixel exact.
  function render() {
    var s = view.zoom / dpr;
    var z = view.zoom;
    // The read-out first: its text can re-wrap the tool bar and move the panes.
    zoomLevel.textContent = Math.abs(z - 1) < 1e-6 ? "1:1 pixels"
      : (z < 1 ? Math.round(z * 100) + " % (reduced)" : "\u00d7" + (Math.round(z * 10) / 10));
    panes.forEach(function (p) {
      var r = p.svg.getBoundingClientRect();
      var tx = Math.round((r.left + r.width / 2 - view.cx * s) * dpr) / dpr - r.left;
      var ty = Math.round((r.top + r.height / 2 - view.cy * s) * dpr) / dpr - r.top;
      p.image.setAttribute("transform", "translate(" + tx + " " + ty + ") scale(" + s + ")");
      p.el.classList.toggle("off", mode === "flicker" && p.side !== shown);
    });
    viewer.classList.toggle("reduced", z < 1 - 1e-6);
    zoomMax = Math.max(zoomMax, view.zoom);
  }

  function setMode(next, keepView) {
    var from = mode;
    mode = next;
    viewer.classList.remove("mode-crop", "mode-loupe", "mode-flicker", "mode-full");
    viewer.classList.add("mode-" + next);
    ["crop", "loupe", "flicker", "full"].forEach(function (m) {
      document.getElementById("mode-" + m).setAttribute("aria-pressed", String(m === next));
    });
    if (!keepView) {
      if (next === "crop") {
        view = { cx: home.cx, cy: home.cy, zoom: 1 };
      } else if (next === "full") {
        view = { cx: panes[0].w / 2, cy: panes[0].h / 2, zoom: Math.min(1, fitZoom()) };
      } else if (next === "loupe") {
        if (from === "full") { view.cx = home.cx; view.cy = home.cy; }
        view.zoom = clampZoom(Math.max(2, view.zoom));
      } else if (next === "flicker") {
        shown = "left";
      }
    }
    render();
  }

  function toggleFlicker() {
    if (mode !== "flicker") {
      setMode("flicker");
      return;
    }
    shown = shown === "left" ? "right" : "left";
    flips += 1;
    render();
  }

  // Keep the image point under (px, py) (CSS px inside the pane) where it is.
  function zoomAt(z, px, py) {
    var r = box();
    var s0 = view.zoom / dpr;
    var ix = view.cx + (px - r.width / 2) / s0;
    var iy = view.cy + (py - r.height / 2) / s0;
    view.zoom = clampZoom(z);
    var s1 = view.zoom / dpr;
    view.cx = ix - (px - r.width / 2) / s1;
    view.cy = iy - (py - r.height / 2) / s1;
    panBy(0, 0);
  }

  function panBy(dx, dy) {
    var s = view.zoom / dpr;
    view.cx = Math.min(panes[0].w, Math.max(0, view.cx - dx / s));
    view.cy = Math.min(panes[0].h, Math.max(0, view.cy - dy / s));
    render();
  }

  // Zooming from the crop or the whole image turns the zoom (loupe) mode on, keeping the view.
  function zoomMode() {
    if (mode === "crop" || mode === "full") { setMode("loupe", true); }
  }

  viewer.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    zoomMode();
    var r = box();
    var step = ev.deltaMode === 1 ? 0.05 : 0.002;
    zoomAt(view.zoom * Math.exp(-ev.deltaY * step), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });

  // Pointer gestures: one pointer drags (or taps), two pinch. A tap only ever swaps the
  // flicker images; it never answers.
  var pointers = {};
  var tap = null;
  var pinch = null;

  function points() {
    return Object.keys(pointers).map(function (k) { return pointers[k]; });
  }

  viewer.addEventListener("pointerdown", function (ev) {
    if (ev.pointerType === "mouse" && ev.button !== 0) { return; }
    ev.preventDefault();
    try { viewer.setPointerCapture(ev.pointerId); } catch (e) { /* pointer already gone */ }
    pointers[ev.pointerId] = { x: ev.clientX, y: ev.clientY };
    var pts = points();
    tap = pts.length === 1 ? { x: ev.clientX, y: ev.clientY, t: performance.now() } : null;
    if (pts.length === 2) {
      pinch = {
        d: Math.max(1, Math.hypot(pts[0].x - pts[1].x, pts[0].y - pts[1].y)),
        zoom: view.zoom,
      };
    }
  });

  viewer.addEventListener("pointermove", function (ev) {
    var prev = pointers[ev.pointerId];
    if (!prev) { return; }
    var pts = points();
    if (pts.length === 2) {
      var mx0 = (pts[0].x + pts[1].x) / 2;
      var my0 = (pts[0].y + pts[1].y) / 2;
      pointers[ev.pointerId] = { x: ev.clientX, y: ev.clientY };
      pts = points();
      var mx = (pts[0].x + pts[1].x) / 2;
      var my = (pts[0].y + pts[1].y) / 2;
      var d = Math.max(1, Math.hypot(pts[0].x - pts[1].x, pts[0].y - pts[1].y));
      zoomMode();
      var r = box();
      zoomAt(pinch.zoom * d / pinch.d, mx - r.left, my - r.top);
      panBy(mx - mx0, my - my0);
      return;
    }
    if (tap && Math.hypot(ev.clientX - tap.x, ev.clientY - tap.y) <= TAP_SLOP_PX) { return; }
    var from = tap || prev;
    tap = null;
    pointers[ev.pointerId] = { x: ev.clientX, y: ev.clientY };
    if (mode !== "full") { panBy(ev.clientX - from.x, ev.clientY - from.y); }
  });

  function pointerEnd(ev) {
    if (!pointers[ev.pointerId]) { return; }
    delete pointers[ev.pointerId];
    if (points().length < 2) { pinch = null; }
    if (ev.type === "pointerup" && tap && performance.now() - tap.t <= TAP_MAX_MS
        && mode === "flicker") {
      toggleFlicker();
    }
    tap = null;
  }
  viewer.addEventListener("pointerup", pointerEnd);
  viewer.addEventListener("pointercancel", pointerEnd);

  document.getElementById("toolbar").addEventListener("click", function (ev) {
    var button = ev.target.closest("button");
    if (!button) { return; }
    if (button.id === "flicker-toggle") {
      toggleFlicker();
    } else if (button.getAttribute("data-mode")) {
      setMode(button.getAttribute("data-mode"));
    }
  });

  function choose(side) {
    var button = document.getElementById("choose-" + side);
    if (!button || sent) { return; }
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    var r;
    if (k === "ArrowLeft" || k === "1") { choose("left"); }
    else if (k === "ArrowRight" || k === "2") { choose("right"); }
    else if (k === "f") { toggleFlicker(); }
    else if (k === "z") { setMode("full"); }
    else if (k === "l") { setMode("loupe"); }
    else if (k === "c") { setMode("crop"); }
    else if (k === "+" || k === "=" || k === "-") {
      zoomMode();
      r = box();
      zoomAt(view.zoom * (k === "-" ? 0.5 : 2), r.width / 2, r.height / 2);
    } else { return; }
    ev.preventDefault();
  });

  // A new window size or pixel ratio (browser zoom), or panes resized by the layout.
  function relayout() {
    dpr = pixelRatio();
    if (mode === "full") { view.zoom = Math.min(1, fitZoom()); }
    render();
  }
  window.addEventListener("resize", relayout);
  if (window.ResizeObserver) { new ResizeObserver(relayout).observe(panes[0].svg); }

  form.addEventListener("submit", function (ev) {
    if (sent) { ev.preventDefault(); return; }
    sent = true;
    var now = performance.now();
    put(form, "rt_ms", Math.round(now - t0));
    putViewport(form);
    put(form, "mode", mode);
    put(form, "zoom", Math.round(Math.min(64, Math.max(MIN_ZOOM, zoomMax)) * 1000) / 1000);
    put(form, "flips", flips);
    put(form, "hidden_ms", Math.round(hiddenMs + (hiddenSince === null ? 0 : now - hiddenSince)));
  });

  setMode("crop");
})();
