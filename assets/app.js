// Spot the Quantized Model: the page's own script (app.launch passes it as `js`; Gradio
// runs it once when the page loads). Two jobs, both about seeing the images well:
//
// 1. Integer scaling. Every round image (class "round-image": the round's images, the
//    detail crops, the reveal's slider) is shown at the largest whole multiple of its own
//    pixels that fits its box, with pixelated rendering, so each source pixel is a crisp
//    square: the micro model's 128 px becomes 384 px in a laptop's column and 256 px on a
//    phone. An image larger than its box (FLUX.1-dev's 1024 px) is shown at the box's
//    width. Full screen fits the screen the same way (width and height).
// 2. spotScrollTo(selector, context): after an action, bring its result into view.
() => {
  const BLOCK = ".round-image";

  // The largest whole factor of (w, h) that fits (availW, availH); a box smaller than
  // the image gets the image scaled down to fit it instead.
  function fittedSize(w, h, availW, availH) {
    const ratio = Math.min(availW / w, availH / h);
    const k = Math.floor(ratio);
    if (k >= 1) return [w * k, h * k];
    return [Math.floor(w * ratio), Math.floor(h * ratio)];
  }

  function setSize(el, w, h) {
    el.style.setProperty("width", `${w}px`, "important");
    el.style.setProperty("height", `${h}px`, "important");
    el.style.setProperty("max-width", "none", "important");
    el.style.setProperty("max-height", "none", "important");
  }

  function fit(img) {
    const block = img.closest(BLOCK);
    if (!block || !img.naturalWidth || !img.naturalHeight) return;
    // Gradio's full screen is a class on the block (a fixed box over the whole window);
    // the browser's own full screen (the Fullscreen API) is handled alike.
    const api = document.fullscreenElement;
    const full = block.classList.contains("fullscreen") ? block : api && api.contains(img) && api;
    const inFull = Boolean(full);
    // The slider's two images fill its box, whose size the slider reads to place its line.
    const slider = img.closest(".slider-wrap");
    const area = inFull ? full : block.querySelector(".image-container") || block;
    const availW = area.clientWidth - (inFull ? 0 : 4);
    if (availW <= 0) return; // hidden: fitted when it shows
    // A column grows with its image: only full screen limits the height, and the slider,
    // which must fit the window to be dragged while both sides are in sight.
    let availH = Infinity;
    if (inFull) availH = area.clientHeight;
    else if (slider) availH = window.innerHeight - 120;
    let [w, h] = fittedSize(img.naturalWidth, img.naturalHeight, availW, availH);
    // The detail crops are compared side by side: all at the smallest of their factors
    // (on a phone two share a line and the third wraps into a wider one).
    const group = !inFull && img.closest(".detail-row");
    if (group) {
      for (const other of group.querySelectorAll(`${BLOCK} img`)) {
        const otherBlock = other.closest(BLOCK);
        const box = otherBlock.querySelector(".image-container") || otherBlock;
        if (!other.naturalWidth || box.clientWidth <= 0) continue;
        const [ow] = fittedSize(other.naturalWidth, other.naturalHeight, box.clientWidth - 4, Infinity);
        const k = ow / other.naturalWidth;
        if (k < w / img.naturalWidth) [w, h] = [img.naturalWidth * k, img.naturalHeight * k];
      }
    }
    if (slider) {
      const box = slider.querySelector(":scope > .wrap") || slider;
      setSize(box, w, h);
      box.style.margin = "0 auto";
    } else {
      setSize(img, w, h);
    }
    img.dataset.spotScale = String(w / img.naturalWidth);
  }

  // Blocks change size without the window doing so (full screen animates its block).
  const watched = new WeakSet();
  const blockResized = new ResizeObserver((entries) =>
    requestAnimationFrame(() =>
      entries.forEach((entry) => entry.target.querySelectorAll("img").forEach(fitLoaded)),
    ),
  );

  function fitLoaded(img) {
    if (img.complete) fit(img);
  }

  function fitAll() {
    document.querySelectorAll(BLOCK).forEach((block) => {
      if (!watched.has(block)) {
        watched.add(block);
        blockResized.observe(block);
      }
      block.querySelectorAll("img").forEach(fitLoaded);
    });
  }

  // New or changed images (every round replaces them): fit each once it has loaded.
  document.addEventListener("load", (e) => {
    if (e.target instanceof HTMLImageElement && e.target.closest(BLOCK)) fit(e.target);
  }, true);
  new MutationObserver(() => requestAnimationFrame(fitAll)).observe(document.body, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["src", "class"],
  });
  const resized = new ResizeObserver(() => requestAnimationFrame(fitAll));
  resized.observe(document.body);
  window.addEventListener("resize", fitAll);
  document.addEventListener("fullscreenchange", () => {
    fitAll();
    requestAnimationFrame(fitAll);
  });

  // Gradio turns a click on an image into pixel coordinates assuming the image is shown
  // at most at its natural size (centred, scale capped at 1), so on an image scaled up
  // here it would name the wrong pixel, or none. A click on a scaled image is replayed
  // at the point Gradio's formula maps to the pixel that was really clicked.
  document.addEventListener("click", (e) => {
    if (!e.isTrusted || !(e.target instanceof Element)) return;
    const button = e.target.closest(`${BLOCK} button`);
    const img = button && button.querySelector(".image-frame img");
    if (!img || !img.naturalWidth || img.closest(".slider-wrap")) return;
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    if (scale <= 1) return;
    const x = (e.clientX - r.left) / scale;
    const y = (e.clientY - r.top) / scale;
    e.stopImmediatePropagation();
    e.preventDefault();
    const replay = new MouseEvent("click", {
      bubbles: true,
      cancelable: true,
      clientX: r.left + (r.width - img.naturalWidth) / 2 + Math.floor(x),
      clientY: r.top + (r.height - img.naturalHeight) / 2 + Math.floor(y),
    });
    e.target.dispatchEvent(replay);
  }, true);

  // Scroll the element matching `selector` to the top of the window once it is shown and
  // its images have loaded; when the element `context` (above it) fits in the window with
  // it, scroll to `context` instead, so the question stays in sight.
  window.spotScrollTo = (selector, context) => {
    const started = performance.now();
    const attempt = () => {
      const target = [...document.querySelectorAll(selector)].find(
        (el) => el.offsetParent !== null && el.getBoundingClientRect().height > 0,
      );
      const images = target ? [...target.querySelectorAll("img")] : [];
      const ready = target && images.every((img) => img.complete);
      if (!ready && performance.now() - started < 5000) {
        setTimeout(attempt, 100);
        return;
      }
      if (!target) return;
      fitAll();
      let el = target;
      if (context) {
        const above = document.querySelector(context);
        if (above && above.offsetParent !== null) {
          const top = above.getBoundingClientRect().top;
          if (target.getBoundingClientRect().bottom - top <= window.innerHeight) el = above;
        }
      }
      el.scrollIntoView({ block: "start", behavior: "instant" });
    };
    setTimeout(attempt, 50);
  };
}
