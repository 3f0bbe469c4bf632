// An accessibility check run inside the page by the browser tests (WebDriver "execute"):
// the RGAA / WCAG 2.1 AA basics a machine can decide. Returns {violations: [...], checked:
// {...}}; each violation names the rule and the element. Written for this hub's pages (no
// third-party code): axe-core would be the reference, but it is not provisioned for the
// offline CI (see hub/tests/browser.rs).
//
// Rules: the document's lang; one h1 and no skipped heading level; the contrast of every
// piece of visible text against its effective background (4.5:1, 3:1 for large text; SVG
// text by its fill); a label for every form control; a scope on every table header and a
// caption (or a name) on every table; a name for every link, button, image and SVG image;
// unique ids; a skip link first in the tab order, to an existing target.
const expectedLang = arguments[0];
const violations = [];
const checked = { texts: 0, controls: 0, tables: 0, headers: 0, links: 0, headings: 0 };
const where = (el) => {
  let s = el.tagName.toLowerCase();
  if (el.id) s += "#" + el.id;
  else if (el.className && typeof el.className === "string") s += "." + el.className.trim().split(/\s+/).join(".");
  const text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 40);
  return text ? `${s} "${text}"` : s;
};
const visible = (el) => {
  if (el.closest("[hidden], [aria-hidden=true]")) return false;
  const st = getComputedStyle(el);
  if (st.display === "none" || st.visibility === "hidden") return false;
  // Closed <details>: only the summary shows.
  const d = el.closest("details");
  if (d && !d.open && !el.closest("summary")) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.right > 0 && r.bottom > 0;
};

// 1. Language.
const lang = document.documentElement.getAttribute("lang");
if (!lang) violations.push("lang: <html> has no lang attribute");
else if (expectedLang && lang !== expectedLang) violations.push(`lang: <html lang="${lang}">, expected ${expectedLang}`);

// 2. Headings.
const hs = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].filter(visible);
checked.headings = hs.length;
if (hs.filter((h) => h.tagName === "H1").length !== 1) violations.push(`headings: ${hs.filter((h) => h.tagName === "H1").length} h1, expected 1`);
let level = 0;
for (const h of hs) {
  const l = +h.tagName[1];
  if (l > level + 1) violations.push(`headings: ${where(h)} is h${l} after h${level}`);
  level = l;
  if (!h.textContent.trim()) violations.push(`headings: ${where(h)} is empty`);
}

// 3. Contrast.
const rgba = (s) => {
  const m = s.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
const over = (top, bottom) => ({
  r: top.r * top.a + bottom.r * (1 - top.a),
  g: top.g * top.a + bottom.g * (1 - top.a),
  b: top.b * top.a + bottom.b * (1 - top.a),
  a: 1,
});
const luminance = (c) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
const ratio = (a, b) => {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};
// The background behind an element: its own and its ancestors' colours blended, white at the
// bottom; for SVG content, the fill of the shape drawn under the text is not known: the
// chart's own background (a white plot) stands for it.
const background = (el) => {
  const layers = [];
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const st = getComputedStyle(e);
    if (st.backgroundImage && st.backgroundImage !== "none") return null;
    const c = rgba(st.backgroundColor);
    if (c && c.a > 0) {
      layers.push(c);
      if (c.a === 1) break;
    }
  }
  let bg = { r: 255, g: 255, b: 255, a: 1 };
  for (const c of layers.reverse()) bg = over(c, bg);
  return bg;
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!n.textContent.trim() || !el || seen.has(el)) continue;
  seen.add(el);
  if (["SCRIPT", "STYLE", "TITLE", "OPTION"].includes(el.tagName) || el.closest("title")) continue;
  if (!visible(el)) continue;
  // The skip link is off-screen until focused.
  if (el.closest("a.skip")) continue;
  const st = getComputedStyle(el);
  const inSvg = el instanceof SVGElement;
  let fg = rgba(inSvg ? st.fill : st.color);
  if (!fg) continue;
  const bg = background(el);
  if (!bg) continue;
  fg = over(fg, bg);
  const size = parseFloat(st.fontSize);
  const bold = parseInt(st.fontWeight, 10) >= 700;
  const large = size >= 24 || (bold && size >= 18.66);
  const need = large ? 3 : 4.5;
  const r = ratio(fg, bg);
  checked.texts++;
  if (r < need) violations.push(`contrast: ${where(el)} ${r.toFixed(2)}:1 < ${need}:1 (${st.color} on rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)}))`);
}

// 4. Form controls.
const named = (el) =>
  (el.getAttribute("aria-label") || "").trim() ||
  (el.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean).map((i) => document.getElementById(i)?.textContent || "").join(" ").trim() ||
  (el.getAttribute("title") || "").trim();
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden") continue;
  checked.controls++;
  const labelled = [...(el.labels || [])].some((l) => l.textContent.trim()) || named(el);
  if (!labelled) violations.push(`label: ${where(el)} (name=${el.name}) has no label`);
}

// 5. Tables.
for (const t of document.querySelectorAll("table")) {
  checked.tables++;
  const cap = t.querySelector(":scope > caption");
  if (!(cap && cap.textContent.trim()) && !named(t)) violations.push(`table: ${where(t)} has no caption`);
  const ths = t.querySelectorAll("th");
  if (!ths.length) violations.push(`table: ${where(t)} has no header cell`);
  for (const th of ths) {
    checked.headers++;
    const scope = th.getAttribute("scope");
    if (!["col", "row", "colgroup", "rowgroup"].includes(scope)) violations.push(`table: header ${where(th)} has no scope`);
  }
}

// 6. Names of links, buttons, images.
for (const a of document.querySelectorAll("a[href], button, summary")) {
  checked.links++;
  const text = (a.textContent || "").trim() || named(a) || [...a.querySelectorAll("img[alt]")].map((i) => i.alt).join("");
  if (!text && !(a.closest("svg") && a.getAttribute("tabindex") === "-1")) violations.push(`name: ${where(a)} has no accessible name`);
}
for (const img of document.querySelectorAll("img")) {
  if (!img.hasAttribute("alt")) violations.push(`image: ${where(img)} has no alt`);
}
for (const svg of document.querySelectorAll("svg")) {
  const role = svg.getAttribute("role");
  if (role === "img" && !named(svg)) violations.push(`image: ${where(svg)} role=img without a name`);
  if (!role && !svg.closest("[aria-hidden=true]")) violations.push(`image: ${where(svg)} has no role`);
}

// 7. Ids.
const ids = {};
for (const el of document.querySelectorAll("[id]")) ids[el.id] = (ids[el.id] || 0) + 1;
for (const [id, n] of Object.entries(ids)) if (n > 1) violations.push(`id: "${id}" is used ${n} times`);

// 8. The skip link.
const focusable = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")]
  .filter((e) => e.getAttribute("tabindex") !== "-1" && !e.disabled && (e.type !== "hidden"));
const first = focusable[0];
if (!first || !first.matches("a.skip[href^='#']")) violations.push(`skip link: the first focusable element is ${first ? where(first) : "none"}`);
else if (!document.getElementById(first.getAttribute("href").slice(1))) violations.push(`skip link: no element ${first.getAttribute("href")}`);

return { violations, checked };
