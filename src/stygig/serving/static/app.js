/* StyGig try-it page: photo (or catalogue item) in, outfit board out. No framework, no build. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PER_CATEGORY = 4; // the outfit's pick plus three alternatives per category
  const TOTAL = 12;
  const CATALOG_PAGE = 12;

  // The API's error.code values, in words a shopper understands.
  const MESSAGES = {
    not_an_image: "That file is not an image.",
    invalid_image: "That image could not be read. It may be damaged or incomplete; please try another photo.",
    empty_image: "That file is empty. Please choose a photo.",
    image_too_small: "That image is too small to recognise. Please use a larger photo.",
    image_too_large: "That photo is too large. Please use a smaller one.",
    payload_too_large: "That photo is too large. Please use a smaller one.",
    image_aspect_ratio:
      "That picture is too long and thin to be a photo of a garment (a long screenshot or a banner?). Crop it to the piece of clothing and try again.",
    image_too_compressed:
      "That image has too many pixels for its file size (a scan or a drawing?). Save it as a JPEG photo, or crop it, and try again.",
    image_decode_too_large: "That photo is too large to read. Please use a smaller one, saved as an ordinary JPEG.",
    image_too_many_scans: "That photo is saved in a way that is slow to read. Save it again as an ordinary JPEG and try again.",
    image_too_many_segments: "That image file is unusual or damaged. Save it again as an ordinary JPEG or PNG and try again.",
    image_too_many_chunks: "That image file is unusual or damaged. Save it again as an ordinary JPEG or PNG and try again.",
    image_malformed_header: "That image file is damaged. Save it again as an ordinary JPEG or PNG and try again.",
    unsupported_media_type: "That image format is not supported. Please use a JPEG, PNG or WebP photo.",
    unsupported_content_type: "That image format is not supported. Please use a JPEG, PNG or WebP photo.",
    invalid_base64: "That image could not be read. Please try another photo.",
    invalid_options: "Those settings could not be used together. Try fewer categories or another gender.",
    invalid_request: "Those settings could not be used together. Try fewer categories or another gender.",
    unknown_item: "That item is no longer in the catalogue.",
    not_found: "That item is no longer in the catalogue.",
    no_image: "There is no picture of that item.",
    overloaded: "The shop is very busy right now. Please try again in a moment.",
    busy: "The shop is very busy right now. Please try again in a moment.",
    too_many_connections: "The shop is very busy right now. Please try again in a moment.",
    queue_full: "The shop is very busy right now. Please try again in a moment.",
    request_timeout: "That took too long. Please try again.",
    timeout: "That took too long. Please try again.",
    not_ready: "The shop is still getting ready. Please try again in a few seconds.",
    unauthorized: "This server needs an access token. Use “Enter access token” to give it.",
    network: "The server could not be reached. Check the connection and try again.",
  };
  // Only for the server's own failures (5xx): a refusal (4xx) says what to change instead.
  const FALLBACK = "Something went wrong on our side. Please try again.";
  const TOO_LARGE = MESSAGES.payload_too_large;

  const state = {
    config: null,
    source: null, // {kind: "photo", file, url} | {kind: "item", id, card}
    response: null,
    outfit: {}, // slot -> row currently on the board
    seq: 0,
    catalogOffset: 0,
  };

  class ApiError extends Error {
    constructor(code, message, status = 0) {
      super(message);
      this.code = code;
      this.status = status; // the HTTP status (0: none, the server was not reached)
    }
  }

  // A server started with an auth token answers 401 without it: ask once, keep it for the tab.
  const TOKEN_KEY = "stygig-token";
  const authHeaders = () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  };
  // Asked at most once per page until the shopper asks to try again (a cancelled or wrong
  // token used to bring the prompt back every second for a minute).
  let tokenAsked = false;
  const askToken = () => {
    if (tokenAsked) return false;
    tokenAsked = true;
    const token = window.prompt("This StyGig server needs its access token:");
    if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
    return Boolean(token);
  };

  async function authFetch(path, init = {}) {
    const send = () => fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
    const used = sessionStorage.getItem(TOKEN_KEY);
    let res = await send();
    if (res.status === 401) {
      // Requests sent together all meet the 401: the first asks, the others reuse its answer.
      const now = sessionStorage.getItem(TOKEN_KEY);
      if ((now && now !== used) || askToken()) res = await send();
      if (res.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY); // refused: never sent again
        $("token-button").hidden = false;
      }
    }
    return res;
  }

  // Thumbnails' blob URLs not yet let go, by image: one is let go once its picture is shown
  // (or refused), or once its image has left the page before loading (a lazy thumbnail of a
  // list replaced by the next search), at the next image set (review, s53: every redraw made
  // new ones and none was revoked).
  const pendingBlobs = new Map();
  function letGo(img) {
    const url = pendingBlobs.get(img);
    if (url) {
      pendingBlobs.delete(img);
      URL.revokeObjectURL(url);
    }
  }
  function sweepBlobs() {
    for (const img of [...pendingBlobs.keys()]) if (!img.isConnected) letGo(img);
  }

  // <img src> cannot carry a header: with a token, images come through fetch as blob URLs.
  async function setImage(img, path) {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      img.src = path;
      return;
    }
    try {
      const res = await authFetch(path);
      if (res.ok) {
        const blob = await res.blob();
        sweepBlobs();
        letGo(img); // a new picture for the same image before the last one showed
        const url = URL.createObjectURL(blob);
        pendingBlobs.set(img, url);
        // The <img> keeps its decoded picture once shown: the blob can go.
        const free = () => {
          if (pendingBlobs.get(img) === url) letGo(img);
        };
        img.addEventListener("load", free, { once: true });
        img.addEventListener("error", free, { once: true });
        img.src = url;
      }
    } catch (e) {
      /* a missing thumbnail leaves the card without a picture */
    }
  }

  async function api(path, init = {}) {
    let res;
    try {
      res = await authFetch(path, { ...init, headers: { Accept: "application/json", ...(init.headers || {}) } });
    } catch (e) {
      throw new ApiError("network", String(e));
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (!res.ok) {
      const err = (body && body.error) || {};
      const code = err.code || (res.status === 413 ? "payload_too_large" : "http_" + res.status);
      throw new ApiError(code, err.message || res.statusText, res.status);
    }
    return body;
  }

  // The server's own message ends a refusal the page has no words for: it is written for people
  // and names no server path (a photo is bytes; the server never names its files).
  const serverSaid = (err) => {
    const said = String(err.message || "").trim().slice(0, 300).replace(/[.\s]+$/, "");
    return said ? " (The shop said: " + said + ".)" : "";
  };
  // In words a shopper understands: what went wrong and what to do; "our side" only for a 5xx
  // or an answer that is not the server's. `photo`: the request sent the shopper's photo.
  function friendly(err, photo = false) {
    if (!(err instanceof ApiError)) return FALLBACK;
    if (MESSAGES[err.code]) return MESSAGES[err.code];
    if (err.status === 413) return TOO_LARGE;
    if (err.status === 415 && photo) return MESSAGES.unsupported_media_type;
    if (err.status >= 400 && err.status < 500) {
      return (
        (photo
          ? "The shop could not use that photo. Please try another one."
          : "The shop could not answer that request. Try other settings or another item.") + serverSaid(err)
      );
    }
    return FALLBACK;
  }
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };
  const words = (s) => String(s || "").replace(/[-_]/g, " ");
  const title = (s) => words(s).replace(/^\w/, (c) => c.toUpperCase());
  const slotLabel = (slot) => {
    const found = state.config && state.config.slots.find((s) => s.name === slot);
    return found ? found.label : title(slot);
  };
  const imageUrl = (id) => "/v1/items/" + encodeURIComponent(id) + "/image";

  // -- status, errors, spinner ------------------------------------------------------------------

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function announce(message) {
    $("announce").textContent = message;
  }

  function busy(on) {
    $("spinner").hidden = !on;
    $("results").setAttribute("aria-busy", on ? "true" : "false");
  }

  // -- config and controls ----------------------------------------------------------------------

  async function loadConfig(attempt = 0) {
    try {
      state.config = await api("/v1/config");
    } catch (e) {
      const locked = e.code === "unauthorized" || e.code === "http_401";
      $("server-state").textContent = e.code === "not_ready" ? "Getting ready…" : locked ? "Locked" : "Offline";
      // Waiting helps a server that is starting or unreachable, not one that wants a token.
      if (attempt < 60 && !locked) setTimeout(() => loadConfig(attempt + 1), 1000);
      if (e.code !== "not_ready") showError(locked ? MESSAGES.unauthorized : friendly(e));
      return;
    }
    $("token-button").hidden = true;
    const cfg = state.config;
    showError("");
    $("server-state").textContent = cfg.items + " items";
    $("server-state").classList.add("ok");
    $("foot-info").textContent = cfg.items + " items · encoder " + cfg.encoder + " · v" + cfg.version;
    $("sample-note").hidden = !cfg.drawn_sample;
    $("sample-examples").hidden = !cfg.examples; // "try an example" only where there are some
    // /docs needs the token where the server has one, and a link cannot send it: no link then.
    $("api-link").hidden = !cfg.docs || Boolean(sessionStorage.getItem(TOKEN_KEY));
    if (cfg.examples) loadExamples();
    showCatalogVersion(cfg.catalog_version);
    // Given again (a new token), the config refills the controls and keeps the one timer: the
    // page's sold-out marks stay relative to the catalogue it first loaded.
    if (state.loadedSequence === undefined) state.loadedSequence = cfg.sequence || 0;
    if (!state.pollTimer) state.pollTimer = setInterval(checkSoldOut, SOLD_OUT_POLL_MS);
    $("catalog-query").placeholder = cfg.text_search ? "Describe it, e.g. navy skirt" : "Search names, e.g. navy skirt";
    fillControls(cfg);
  }

  // The gender and category controls, emptied first and the shopper's choices kept.
  function fillControls(cfg) {
    const gender = $("gender");
    const pickedGender = gender.value;
    gender.replaceChildren(gender.options[0]); // "Anyone"
    for (const g of cfg.genders.filter((g) => g !== "unisex")) {
      const opt = el("option", null, title(g));
      opt.value = g;
      gender.append(opt);
    }
    gender.value = pickedGender;
    if (gender.selectedIndex < 0) gender.selectedIndex = 0;
    const chips = $("categories");
    const ticked = new Set([...chips.querySelectorAll("input:checked")].map((i) => i.value));
    chips.replaceChildren();
    const browse = $("catalog-category");
    const browsing = browse.value;
    browse.replaceChildren(browse.options[0]); // "All categories"
    for (const c of cfg.categories) {
      const id = "cat-" + c.name;
      const input = el("input");
      input.type = "checkbox";
      input.id = id;
      input.value = c.name;
      input.checked = ticked.has(c.name);
      const label = el("label", null, words(c.name));
      label.htmlFor = id;
      chips.append(input, label);
      const opt = el("option", null, words(c.name) + " (" + c.count + ")");
      opt.value = c.name;
      browse.append(opt);
    }
    browse.value = browsing;
    if (browse.selectedIndex < 0) browse.selectedIndex = 0;
  }

  function options() {
    const mode = document.querySelector("input[name=mode]:checked").value;
    const opts = { mode, k: PER_CATEGORY, k_total: TOTAL };
    const gender = $("gender").value;
    if (gender) opts.gender = gender;
    const cats = [...$("categories").querySelectorAll("input:checked")].map((i) => i.value);
    if (cats.length) opts.include_categories = cats;
    if (!$("harmony").checked) opts.use_color = false;
    return opts;
  }

  // -- asking the server ------------------------------------------------------------------------

  async function recommend() {
    const source = state.source;
    if (!source) return;
    const seq = ++state.seq;
    const opts = options();
    showError("");
    busy(true);
    try {
      let body;
      if (source.kind === "photo") {
        const form = new FormData();
        form.append("image", source.file, source.file.name || "photo.jpg");
        form.append("options", JSON.stringify(opts));
        body = await api("/v1/recommend", { method: "POST", body: form });
      } else {
        const params = new URLSearchParams();
        for (const [k, v] of Object.entries(opts)) params.set(k, Array.isArray(v) ? v.join(",") : String(v));
        body = await api("/v1/items/" + encodeURIComponent(source.id) + "/recommendations?" + params);
      }
      if (seq !== state.seq) return; // a newer request is on its way
      $("results").dataset.request = JSON.stringify(opts);
      render(body);
    } catch (e) {
      if (seq !== state.seq) return;
      $("answer").hidden = true;
      $("empty").hidden = false;
      const said = friendly(e, source.kind === "photo");
      showError(said);
      announce(said);
    } finally {
      if (seq === state.seq) busy(false);
    }
  }

  // An item's name inside a sentence for screen readers, its direction isolated (U+2068 ...
  // U+2069): a name holding a right-to-left override turned the rest of the label around.
  function isolated(row) {
    return "\u2068" + (row.name || row.id) + "\u2069";
  }

  const SENT_AS_IS = ["image/jpeg", "image/png", "image/webp"];

  async function shrinkIfHuge(file) {
    // Phone photos can exceed the upload limit, and a GIF, BMP, AVIF or HEIC (where the
    // browser reads it) is not what the server takes: re-encode those here first.
    const limit = (state.config && state.config.max_upload_bytes) || 6 * 1024 * 1024;
    const readable = SENT_AS_IS.includes(file.type) || !file.type.startsWith("image/");
    if ((readable && file.size < limit * 0.9) || !window.createImageBitmap) return file;
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(1, 2048 / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      const ctx = canvas.getContext("2d");
      // A transparent background on white, as the server composites one (a JPEG has no
      // alpha: the canvas put it on black, and the same garment got another answer).
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.9));
      return blob ? new File([blob], "photo.jpg", { type: "image/jpeg" }) : file;
    } catch (e) {
      return file; // not decodable here: let the server say what is wrong with it
    }
  }

  async function usePhoto(file) {
    if (!file) return;
    if (state.source && state.source.url) URL.revokeObjectURL(state.source.url);
    busy(true); // re-encoding a large photo takes a moment: say so at once
    showError("");
    const upload = await shrinkIfHuge(file);
    state.source = { kind: "photo", file: upload, url: URL.createObjectURL(file) };
    recommend();
  }

  // The operator's example photos: one click sends the photo itself, as a shopper's upload.
  async function loadExamples() {
    let list;
    try {
      list = (await api("/v1/examples")).examples || [];
    } catch (e) {
      return; // no examples: the page works on without them
    }
    const ul = $("example-list");
    ul.replaceChildren();
    for (const ex of list) {
      const li = el("li");
      const btn = el("button", "pick");
      btn.type = "button";
      btn.dataset.example = ex.name;
      btn.setAttribute("aria-label", "Try the example photo: " + ex.label);
      const img = el("img");
      img.alt = "";
      setImage(img, ex.url);
      btn.append(img, el("span", "pick-name", ex.label));
      btn.addEventListener("click", () => useExample(ex));
      li.append(btn);
      ul.append(li);
    }
    $("examples").hidden = !list.length;
  }

  async function useExample(ex) {
    let res;
    try {
      res = await authFetch(ex.url);
    } catch (e) {
      showError(friendly(new ApiError("network", String(e))));
      return;
    }
    if (!res.ok) {
      showError(FALLBACK);
      return;
    }
    const blob = await res.blob();
    usePhoto(new File([blob], ex.name, { type: ex.media_type }));
  }

  function useItem(card) {
    if (state.source && state.source.url) URL.revokeObjectURL(state.source.url);
    state.source = { kind: "item", id: card.id, card };
    recommend();
  }

  // -- rendering --------------------------------------------------------------------------------

  function render(body) {
    state.response = body;
    const q = body.query[0] || {};
    $("empty").hidden = true;
    $("answer").hidden = false;
    const img = $("query-img");
    if (state.source.kind === "photo") {
      img.src = state.source.url;
      img.alt = "Your photo";
    } else {
      setImage(img, imageUrl(state.source.id));
      img.alt = state.source.card.name || state.source.id;
    }
    renderQuery(q);
    renderGender(body.gender || {});
    state.outfit = {};
    const outfit = body.mode === "outfit" && body.outfit ? body.outfit.slots : null;
    if (outfit) for (const [slot, row] of Object.entries(outfit)) state.outfit[slot] = row;
    renderBoard(q, body);
    renderAlternatives(body);
    if (window.matchMedia("(max-width: 899px)").matches) $("results").scrollIntoView({ block: "start" });
    const n = outfit ? Object.keys(outfit).length : body.items.length;
    announce(
      (q.unlike_catalogue === true ? "This photo looks unlike the catalogue; the answer is a guess. " : "") +
        (q.category ? "Recognised " + words(q.category) + ". " : "") +
        (outfit ? "Outfit with " + n + " pieces." : n + " similar items.")
    );
  }

  function renderQuery(q) {
    $("query-category").textContent = q.category ? title(q.category) : "Not recognised";
    const source = { vote: "recognised from the photo", head: "recognised from the photo: the category model overruled the neighbours' vote", catalog: "from the catalogue", stated: "as you said" };
    $("query-source").textContent = q.category_source ? "(" + (source[q.category_source] || q.category_source) + ")" : "";
    $("query-unlike").hidden = q.unlike_catalogue !== true;
    const votes = $("votes");
    votes.replaceChildren();
    const entries = Object.entries(q.votes || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const total = entries.reduce((s, [, n]) => s + n, 0) || 1;
    for (const [cat, n] of entries) {
      const li = el("li", "vote");
      li.dataset.category = cat;
      li.dataset.count = String(n);
      li.append(el("span", "vote-name", words(cat)));
      const bar = el("span", "vote-bar");
      const fill = el("span");
      fill.style.width = Math.round((100 * n) / total) + "%";
      bar.append(fill);
      li.append(bar, el("span", "vote-count", n + " of " + total));
      votes.append(li);
    }
    const palette = $("palette");
    palette.replaceChildren();
    const colours = q.palette && q.palette.length ? q.palette : q.hex ? [{ hex: q.hex, share: 1 }] : [];
    for (const c of colours) {
      const li = el("li", "chip-color");
      li.dataset.hex = c.hex;
      const sw = el("span", "swatch big");
      sw.style.background = c.hex;
      li.append(sw, el("span", "chip-hex", c.hex + (c.share < 1 ? " · " + Math.round(c.share * 100) + "%" : "")));
      if (c.hex === q.hex) li.classList.add("main");
      li.title = c.hex === q.hex ? "Main colour" : "";
      palette.append(li);
    }
  }

  // Whose items these are: stated, from a catalogue item, voted from the photo, or uncertain
  // (then the engine shows unisex pieces only and says so).
  function renderGender(g) {
    const box = $("query-gender");
    box.dataset.source = g.source || "none";
    box.dataset.hedged = g.hedged ? "true" : "false";
    let text = "";
    if (g.source === "uncertain") {
      const unsure = "We can't tell from the photo whether this is for men or women (best guess " + words(g.guess) +
        ", " + Math.round(100 * g.confidence) + "% sure)";
      text = g.hedged
        ? unsure + ", so the outfit uses unisex pieces. Choose a gender above for more."
        : unsure + ". Choose a gender above to be sure.";
    } else if (g.source === "photo" && g.value) {
      text = "For " + words(g.value) + " (" + Math.round(100 * g.confidence) + "% of similar items).";
    } else if (g.value) {
      text = "For " + words(g.value) + ".";
    }
    box.textContent = text;
    box.hidden = !text;
  }

  function scoreParts(row) {
    const cfg = (state.config && state.config.scoring) || { similarity_weight: 0.6, harmony_weight: 0.4 };
    const parts = [];
    if (state.response.mode === "similar") {
      parts.push(["Looks alike (similarity)", row.similarity.toFixed(2)]);
    } else {
      const q = (state.response.query[0] || {}).category;
      parts.push(["Style match " + row.similarity.toFixed(2) + " × " + cfg.similarity_weight, (row.similarity * cfg.similarity_weight).toFixed(2)]);
      if (row.harmony_rule && options().use_color !== false) {
        parts.push(["Colours: " + words(row.harmony_rule) + " " + row.harmony.toFixed(2) + " × " + cfg.harmony_weight, (row.harmony * cfg.harmony_weight).toFixed(2)]);
      }
      if (row.boost > 1) parts.push(["Goes with " + (q ? words(q) : "your piece"), "× " + row.boost.toFixed(2)]);
    }
    parts.push(["Score", row.score.toFixed(2)]);
    return parts;
  }

  function fillWhy(box, row) {
    box.replaceChildren();
    box.append(el("p", "why-reason", row.reason));
    const dl = el("dl", "why-parts");
    for (const [k, v] of scoreParts(row)) dl.append(el("dt", null, k), el("dd", null, v));
    box.append(dl);
  }

  function makeCard(row, { slot, onSwap, swapLabel, compact } = {}) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    if (compact) node.classList.add("compact");
    node.dataset.itemId = row.id;
    node.dataset.hex = row.hex || "";
    node.dataset.score = String(row.score);
    if (slot) node.dataset.slot = slot;
    const tag = node.querySelector(".slot-tag");
    if (slot) tag.textContent = slotLabel(slot);
    else tag.remove();
    const img = node.querySelector("img");
    setImage(img, imageUrl(row.id));
    img.alt = row.name || row.id;
    img.addEventListener("error", () => img.classList.add("missing"), { once: true });
    const name = node.querySelector(".card-name");
    name.textContent = row.name || row.id;
    name.title = row.name || row.id; // shown whole on hover: the card clamps it to 3 lines
    const sw = node.querySelector(".swatch");
    sw.style.background = row.hex || "#ccc";
    sw.title = row.hex || "";
    node.querySelector(".card-color").textContent = row.hex || "";
    node.querySelector(".card-category").textContent = words(row.category);
    const pct = Math.max(4, Math.min(100, Math.round((row.score / maxScore()) * 100)));
    node.querySelector(".score-bar span").style.width = pct + "%";
    node.querySelector(".score-value").textContent = row.score.toFixed(2);
    const why = node.querySelector(".why");
    why.id = "why-" + Math.random().toString(36).slice(2);
    fillWhy(why, row);
    if (compact) node.querySelector(".card-media").title = row.reason + " · score " + row.score.toFixed(2);
    const whyBtn = node.querySelector(".act-why");
    whyBtn.setAttribute("aria-controls", why.id);
    whyBtn.setAttribute("aria-label", "Why " + isolated(row) + "? The score explained");
    whyBtn.title = "Why this item?";
    whyBtn.addEventListener("click", () => {
      const open = whyBtn.getAttribute("aria-expanded") !== "true";
      whyBtn.setAttribute("aria-expanded", String(open));
      why.hidden = !open;
      node.classList.toggle("open", open);
    });
    const more = node.querySelector(".act-more");
    more.setAttribute("aria-label", "More like this: " + isolated(row));
    more.title = "More like this";
    more.addEventListener("click", () => moreLikeThis(row));
    const swap = node.querySelector(".act-swap");
    if (onSwap) {
      swap.textContent = swapLabel || "Swap";
      swap.setAttribute("aria-label", (swapLabel ? "Use in the outfit" : "Swap for the next best") + ": " + isolated(row));
      swap.addEventListener("click", onSwap);
    } else {
      swap.remove();
    }
    return node;
  }

  function maxScore() {
    const all = Object.values(state.response.by_category || {}).flat();
    return Math.max(0.01, ...all.map((r) => r.score), ...(state.response.items || []).map((r) => r.score));
  }

  function slotAlternatives(slot) {
    const rows = Object.values(state.response.by_category || {})
      .flat()
      .filter((r) => r.slot === slot);
    return rows.sort((a, b) => b.score - a.score || a.id.localeCompare(b.id));
  }

  function swapSlot(slot) {
    const rows = slotAlternatives(slot);
    if (rows.length < 2) return;
    const at = rows.findIndex((r) => r.id === state.outfit[slot].id);
    state.outfit[slot] = rows[(at + 1) % rows.length];
    renderBoard(state.response.query[0] || {}, state.response);
    renderAlternatives(state.response);
    const card = $("board").querySelector('[data-slot="' + CSS.escape(slot) + '"] .act-swap');
    if (card) card.focus();
    announce(slotLabel(slot) + " swapped for " + isolated(state.outfit[slot]) + ".");
  }

  function useAlternative(row) {
    state.outfit[row.slot] = row;
    renderBoard(state.response.query[0] || {}, state.response);
    renderAlternatives(state.response);
    announce(isolated(row) + " is now in the outfit.");
  }

  function moreLikeThis(row) {
    document.getElementById("mode-similar").checked = true;
    useItem({ id: row.id, name: row.name, category: row.category });
    $("results").focus({ preventScroll: false });
  }

  function renderBoard(q, body) {
    const board = $("board");
    board.replaceChildren();
    const outfit = body.mode === "outfit";
    $("board-title").textContent = outfit ? "The outfit" : "Similar items";
    if (outfit) {
      const order = (state.config ? state.config.slots.map((s) => s.name) : []).concat(Object.keys(state.outfit));
      const seen = new Set();
      for (const slot of order) {
        if (seen.has(slot) || !state.outfit[slot]) continue;
        seen.add(slot);
        const alts = slotAlternatives(slot).length;
        board.append(makeCard(state.outfit[slot], { slot, onSwap: alts > 1 ? () => swapSlot(slot) : null }));
      }
      const n = seen.size;
      $("board-note").textContent = n
        ? n + (n === 1 ? " piece" : " pieces") + " to go with your " + words(q.category || "piece") + ". Score " + (body.outfit.score / Math.max(body.outfit.item_ids.length, 1)).toFixed(2) + " a piece, on average."
        : "";
    } else {
      for (const row of body.items) board.append(makeCard(row, { slot: null }));
      $("board-note").textContent = body.items.length + " items that look alike, most similar first.";
    }
    if (!board.children.length) {
      const li = el("li", "nothing", "Nothing in the catalogue matches these settings. Try fewer categories or another gender.");
      board.append(li);
    }
    markSoldOut();
  }

  function renderAlternatives(body) {
    const box = $("alts");
    box.replaceChildren();
    const outfitIds = new Set(Object.values(state.outfit).map((r) => r.id));
    const shown = body.mode === "outfit";
    $("alts-section").hidden = !shown;
    if (!shown) return;
    for (const [cat, rows] of Object.entries(body.by_category || {})) {
      const rest = rows.filter((r) => !outfitIds.has(r.id));
      if (!rest.length) continue;
      const group = el("section", "alt-group");
      group.dataset.category = cat;
      const h = el("h4", null, title(cat));
      group.append(h);
      const list = el("ul", "alt-list");
      for (const row of rest) list.append(makeCard(row, { slot: row.slot, onSwap: () => useAlternative(row), swapLabel: "Use", compact: true }));
      group.append(list);
      box.append(group);
    }
    markSoldOut();
  }

  // -- the living catalogue: its version, and items sold out since the page loaded -------------

  const SOLD_OUT_POLL_MS = 15000;

  function showCatalogVersion(version) {
    if (!version) return;
    const box = $("catalog-version");
    box.textContent = "catalogue " + version;
    box.title = "artifact version + changes applied";
  }

  // What the page last heard of each item's availability: the catalogue picker's `available`
  // (as of its answer: an item sold out before the page loaded) and the version poll's
  // `unavailable_since` / `available_again` (as of the poll), whichever came last.
  const availability = new Map();

  function noteAvailability(ids, available) {
    for (const id of ids) availability.set(id, available);
  }

  // Greyed and tagged together, both following the item's state (a restocked item loses both).
  function markSoldOut() {
    for (const node of document.querySelectorAll("[data-item-id]")) {
      const sold = availability.get(node.dataset.itemId) === false;
      node.classList.toggle("sold-out", sold);
      const tag = node.querySelector(":scope > .sold-out-tag");
      if (sold && !tag) {
        const mark = el("span", "sold-out-tag", "Sold out");
        mark.setAttribute("role", "status");
        node.prepend(mark);
      } else if (!sold && tag) {
        tag.remove();
      }
    }
  }

  async function checkSoldOut() {
    if (document.hidden) return;
    let v;
    try {
      v = await api("/v1/catalog/version?since=" + String(state.loadedSequence || 0));
    } catch (e) {
      return; // an older server or a hiccup: the page works on without marks
    }
    showCatalogVersion(v.catalog_version);
    noteAvailability(v.unavailable_since || [], false);
    noteAvailability(v.available_again || [], true);
    markSoldOut();
    if (v.complete === false) {
      // The catalogue was compacted (or moved on too far) since this page loaded: what sold
      // out before is not listed any more. Say so instead of showing stale availability.
      $("catalog-version").textContent = "catalogue " + v.catalog_version + " (updated: reload the page to refresh availability)";
    }
  }

  // -- catalogue picker -------------------------------------------------------------------------

  let catalogTimer = 0;
  async function loadCatalog(append = false) {
    if (!append) state.catalogOffset = 0;
    const params = new URLSearchParams({ query: $("catalog-query").value.trim(), limit: String(CATALOG_PAGE), offset: String(state.catalogOffset) });
    const cat = $("catalog-category").value;
    if (cat) params.set("category", cat);
    let page;
    try {
      page = await api("/v1/catalog?" + params);
    } catch (e) {
      $("catalog-count").textContent = friendly(e);
      return;
    }
    const list = $("catalog-list");
    if (!append) list.replaceChildren();
    for (const card of page.items) {
      const li = el("li");
      const btn = el("button", "pick");
      btn.type = "button";
      btn.dataset.itemId = card.id;
      btn.title = card.name || card.id;
      const img = el("img");
      setImage(img, card.image_url);
      img.alt = "";
      img.loading = "lazy";
      btn.append(img, el("span", "pick-name", card.name || card.id));
      btn.setAttribute("aria-label", "Start from " + (card.name || card.id));
      btn.addEventListener("click", () => useItem(card));
      li.append(btn);
      list.append(li);
    }
    for (const card of page.items) if (typeof card.available === "boolean") availability.set(card.id, card.available);
    markSoldOut();
    state.catalogOffset += page.items.length;
    $("catalog-count").textContent = page.total ? page.total + (page.total === 1 ? " item" : " items") : "No items match.";
    $("catalog-more").hidden = state.catalogOffset >= page.total;
  }

  // -- wiring -----------------------------------------------------------------------------------

  function wire() {
    const photo = $("photo-input");
    const camera = $("camera-input");
    $("pick-photo").addEventListener("click", () => photo.click());
    $("take-photo").addEventListener("click", () => camera.click());
    for (const input of [photo, camera]) {
      input.addEventListener("change", () => {
        usePhoto(input.files[0]);
        input.value = "";
      });
    }
    const drop = $("drop");
    for (const ev of ["dragenter", "dragover"]) {
      drop.addEventListener(ev, (e) => {
        e.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      usePhoto(e.dataTransfer.files[0]);
    });
    document.addEventListener("paste", (e) => {
      const file = [...(e.clipboardData ? e.clipboardData.files : [])][0];
      if (file) usePhoto(file);
    });
    $("settings").addEventListener("change", () => {
      const ticked = [...$("categories").querySelectorAll("input:checked")].map((i) => words(i.value));
      $("categories-summary").textContent = ticked.length ? ticked.join(", ") : "all";
      recommend();
    });
    $("settings").addEventListener("submit", (e) => e.preventDefault());
    $("catalog-form").addEventListener("submit", (e) => {
      e.preventDefault();
      loadCatalog();
    });
    $("catalog-query").addEventListener("input", () => {
      clearTimeout(catalogTimer);
      catalogTimer = setTimeout(() => loadCatalog(), 250);
    });
    $("catalog-category").addEventListener("change", () => loadCatalog());
    $("catalog-more").addEventListener("click", () => loadCatalog(true));
    $("catalog-picker").addEventListener("toggle", () => {
      if ($("catalog-picker").open && !$("catalog-list").children.length) loadCatalog();
    });
    $("token-button").addEventListener("click", () => {
      tokenAsked = false; // the shopper asked: one more prompt
      if (askToken()) loadConfig();
    });
  }

  wire();
  loadConfig();
})();
