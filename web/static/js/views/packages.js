/*
 * Packages: upload with progress (operators), and the package list (rows
 * updated in place) with each package's details: sizes, chunks, upload,
 * who uploaded it, its ids.
 */
import { h, append, badge, headRow, fillRows, rowKey, none } from "../dom.js";
import { t, fmtBytes, fmtNumber } from "../i18n.js";
import { api, xhrResult } from "../api.js";
import { act, toast, refreshNow, heading, go, canOperate } from "../app.js";
import { cache, loadPackages, prefill } from "../data.js";
import { timeEl, guidEl } from "../widgets.js";
import { liveThrottle } from "../live.js";

const ACCEPT = ".tar,.tar.gz,.tgz,.tar.zst,.tzst,.tar.xz,.txz,application/x-tar,application/gzip,application/zstd,application/x-xz";

/** Upload formats as file name endings (not words: the same in every language). */
const FORMAT_TEXT = { tar: "tar", tar_gz: "tar.gz", tar_zst: "tar.zst", tar_xz: "tar.xz" };

/** How a package was uploaded: "tar.gz"; packages from before content chunking have no format. */
function formatText(f) { return f == null ? t("packages.format.legacy") : FORMAT_TEXT[f] || String(f); }

/** Who uploaded a package: uploaded_by, or a dash when the coordinator does not say. */
function uploaderText(p) { return p.uploaded_by ? p.uploaded_by : "—"; }

/** A version without trailing ".0" parts: "1.2" and "1.2.0" are the same version. */
function versionKey(v) { return String(v).replace(/(\.0)+$/, ""); }

/** The Packages page. */
export function packagesView(root) {
  const operator = canOperate();
  const body = h("tbody", { "data-test": "packages-rows" });
  const live = liveThrottle(5000, body);
  const open = new Set(); // package ids whose details are shown
  const manifests = new Map(); // package id -> its manifest's extra facts, or an error text
  let byId = new Map();
  const name = h("input", { type: "text", size: 20, maxlength: 64, placeholder: "ukm5-till", pattern: "[A-Za-z0-9._-]{1,64}" });
  const version = h("input", { type: "text", size: 12, maxlength: 64, placeholder: "5.2.117" });
  const file = h("input", { type: "file", accept: ACCEPT,
    onchange: () => {
      // Suggest name and version from a file called NAME-VERSION.tar[.gz|.zst|.xz].
      const f = file.files[0];
      const m = f && /^(.+?)-(\d+(?:\.\d+){0,5})\.(?:tar|tar\.gz|tgz|tar\.zst|tzst|tar\.xz|txz)$/.exec(f.name);
      if (m) { if (!name.value) name.value = m[1]; if (!version.value) version.value = m[2]; }
    } });
  const bar = h("progress", { class: "progress-upload", max: 100, value: 0 });
  const barText = h("span", { class: "small muted" });
  const progressRow = h("div", { class: "row", style: "display: none" }, bar, barText);
  const msg = h("div", { class: "small" });
  let xhr = null;
  const cancel = h("button", { disabled: true, onclick: () => xhr && xhr.abort() }, t("core.btn.cancel"));
  const upload = h("button", { type: "submit", class: "primary", "data-test": "package-upload" }, t("packages.btn.upload"));

  append(root,
    heading(t("packages.title")),
    operator ? h("form", { class: "card", novalidate: true, "data-test": "package-upload-form",
      onsubmit: (e) => { e.preventDefault(); startUpload(); } },
      h("h2", null, t("packages.upload.title")),
      h("div", { class: "row" },
        h("label", { class: "f" }, t("packages.upload.file"), file),
        h("label", { class: "f" }, t("packages.col.name"), name),
        h("label", { class: "f" }, t("packages.col.version"), version),
        upload, cancel),
      progressRow, msg,
      h("p", { class: "hint" }, t("packages.upload.hint"))) : null,
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", { "data-test": "packages-table" },
        headRow(t("packages.col.name"), t("packages.col.version"), [t("packages.col.size"), { class: "num", title: t("packages.col.size_title") }],
          [t("packages.col.upload"), { class: "num hide-narrow" }],
          [t("packages.col.wire"), { class: "num", title: t("packages.col.wire_title") }],
          [t("packages.col.chunks"), { class: "num hide-narrow" }], t("packages.col.uploaded"),
          [t("packages.col.active_tasks"), { class: "num hide-narrow" }], ""),
        body))));

  /** Streams the file as the raw request body (not multipart); name and
   *  version go in the query string (see uploadPackage in openapi.json). XMLHttpRequest rather
   *  than fetch because only it reports upload progress. */
  function startUpload() {
    const f = file.files[0];
    msg.className = "small err";
    if (!f) { msg.textContent = t("packages.upload.no_file"); return; }
    const problem = uploadProblem(name.value.trim(), version.value.trim());
    if (problem) { msg.textContent = problem; return; }
    msg.textContent = "";
    const q = new URLSearchParams({ name: name.value.trim(), version: version.value.trim() });
    xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/packages?" + q.toString());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    progressRow.style.display = "";
    bar.value = 0;
    barText.textContent = t("packages.upload.starting");
    upload.disabled = true;
    cancel.disabled = false;
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) { barText.textContent = t("packages.upload.sent", { sent: fmtBytes(e.loaded) }); return; }
      bar.value = Math.floor((e.loaded / e.total) * 100);
      barText.textContent = t("packages.upload.progress", { percent: bar.value, loaded: fmtBytes(e.loaded), total: fmtBytes(e.total) });
    };
    xhr.upload.onload = () => { bar.removeAttribute("value"); barText.textContent = t("packages.upload.processing"); };
    const finish = () => { upload.disabled = false; cancel.disabled = true; xhr = null; };
    xhr.onload = () => {
      const x = xhr;
      finish();
      try {
        const p = xhrResult(x);
        progressRow.style.display = "none";
        msg.className = "small";
        msg.textContent = t("packages.upload.stored", { name: p.name, version: p.version, uploaded: fmtBytes(p.upload_size),
          size: fmtBytes(p.size), n: p.chunk_count, wire: fmtBytes(p.wire_size) });
        toast("ok", t("packages.toast.uploaded", { name: p.name, version: p.version }));
        file.value = ""; name.value = ""; version.value = "";
        refreshNow();
      } catch (e) {
        barText.textContent = t("packages.upload.failed");
        msg.className = "small err";
        msg.textContent = e.message + " (" + e.code + ")";
      }
    };
    xhr.onerror = () => {
      finish(); barText.textContent = t("packages.upload.failed"); msg.className = "small err";
      msg.textContent = t("packages.upload.broken");
    };
    xhr.onabort = () => {
      finish(); barText.textContent = t("packages.upload.cancelled"); msg.className = "small";
      msg.textContent = t("packages.upload.cancelled_msg");
    };
    xhr.send(f);
  }

  /** Checks made before sending: the coordinator refuses these before it
   *  reads the body, and a browser may then only see a broken connection. */
  function uploadProblem(n, v) {
    if (!n || !v) return t("packages.upload.need_both");
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(n)) return t("packages.upload.bad_name");
    if (!/^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,5}$/.test(v) || v.length > 64) return t("packages.upload.bad_version");
    const same = cache.packages.find((p) => p.name === n && versionKey(p.version) === versionKey(v));
    if (same) return t("packages.upload.exists", { name: n, version: same.version });
    return null;
  }

  /** Deletes the package of the row (looked up at click time): refused at
   *  once while unfinished tasks use it, else after asking. */
  function remove(e) {
    const p = byId.get(rowKey(e));
    if (!p) return;
    if (p.active_tasks > 0) {
      toast("error", t("packages.delete_in_use", { name: p.name, version: p.version, n: p.active_tasks }));
      return;
    }
    if (!confirm(t("packages.confirm.delete_unused", { name: p.name, version: p.version }))) return;
    act(e.currentTarget, t("packages.action.delete"), async () => {
      await api("DELETE", `/api/v1/packages/${p.package_id}`);
      toast("ok", t("packages.toast.deleted", { name: p.name, version: p.version }));
      refreshNow();
    });
  }

  /** Shows or hides the details of the row's package; loads its manifest
   *  (in the package's details: the unpacked size, the chunker) once. */
  function toggle(e) {
    const id = rowKey(e);
    if (open.has(id)) open.delete(id); else open.add(id);
    render();
    if (open.has(id) && !manifests.has(id)) {
      manifests.set(id, null);
      api("GET", `/api/v1/packages/${id}`).then((p) => {
        const m = (p && p.manifest) || {};
        manifests.set(id, { unpacked_size: m.unpacked_size ?? null, chunker: m.chunker || "V1" });
      }).catch((err) => manifests.set(id, { error: err.message })).then(render);
    }
  }

  function row(p) {
    const shown = open.has(p.package_id);
    return h("tr", { "data-test": "package-row" },
      h("td", null, h("b", { class: "wrap-any" }, p.name)),
      h("td", null, h("span", { class: "mono" }, p.version), p.newest ? [" ", badge(t("packages.newest"), "b-green")] : null),
      h("td", { class: "num nowrap" }, fmtBytes(p.size)),
      h("td", { class: "num nowrap hide-narrow" }, fmtBytes(p.upload_size), h("div", { class: "small muted" }, formatText(p.upload_format))),
      h("td", { class: "num nowrap" }, fmtBytes(p.wire_size)),
      h("td", { class: "num hide-narrow" }, fmtNumber(p.chunk_count)),
      h("td", { class: "small" }, timeEl(p.created, true), h("div", { class: "muted", title: t("packages.detail.uploaded_by"), "data-test": "package-uploaded-by" }, uploaderText(p))),
      h("td", { class: "num hide-narrow" }, fmtNumber(p.active_tasks)),
      h("td", null, h("div", { class: "actions" },
        h("button", { class: "small", "aria-expanded": shown ? "true" : "false", "data-test": "package-details", onclick: toggle },
          t(shown ? "packages.btn.hide_details" : "packages.btn.details")),
        operator ? h("button", { class: "small", "data-test": "package-new-task",
          onclick: (e) => { prefill.package_id = rowKey(e); go("tasks"); } }, t("packages.btn.new_task")) : null,
        operator ? h("button", { class: "small danger", "data-test": "package-delete", onclick: remove }, t("core.btn.delete")) : null)));
  }

  /** A package's details, in a row under it. */
  function detailsRow(p) {
    const m = manifests.get(p.package_id);
    const item = (k, ...v) => [h("dt", null, k), h("dd", null, v)];
    return h("tr", { "data-test": "package-details-row" }, h("td", { colspan: 9, class: "details" }, h("dl", { class: "kvgrid" },
      item(t("packages.col.version"), h("span", { class: "mono" }, p.version)),
      item(t("packages.detail.size"), fmtBytes(p.size), h("span", { class: "muted small" }, " (" + t("packages.detail.bytes", { n: p.size }) + ")")),
      item(t("packages.detail.unpacked"), !m ? h("span", { class: "muted" }, t("packages.detail.loading"))
        : m.error ? h("span", { class: "err" }, m.error)
          : m.unpacked_size == null ? none(t("packages.detail.unpacked_unknown")) : fmtBytes(m.unpacked_size)),
      item(t("packages.col.chunks"), fmtNumber(p.chunk_count), m && m.chunker ? h("span", { class: "muted small" }, ` (${m.chunker})`) : null),
      item(t("packages.detail.upload"), t("packages.detail.upload_value", { format: formatText(p.upload_format), size: fmtBytes(p.upload_size) })),
      item(t("packages.col.wire"), fmtBytes(p.wire_size), h("div", { class: "small muted" }, t("packages.col.wire_title"))),
      item(t("packages.detail.uploaded_by"), uploaderText(p)),
      item(t("packages.detail.created"), timeEl(p.created)),
      item(t("packages.col.active_tasks"), fmtNumber(p.active_tasks)),
      item(t("packages.detail.package_id"), guidEl(p.package_id)),
      item(t("packages.detail.upload_id"), guidEl(p.upload_id)))));
  }

  function render() {
    byId = new Map(cache.packages.map((p) => [p.package_id, p]));
    const rows = [];
    for (const p of cache.packages) {
      rows.push({ key: p.package_id, p });
      if (open.has(p.package_id)) rows.push({ key: p.package_id + "/details", p, details: true });
    }
    fillRows(body, rows, (r) => r.key, (r) => (r.details ? detailsRow(r.p) : row(r.p)), 9, t("packages.empty"));
  }

  return {
    interval: 15000,
    /** Packages uploaded or deleted; tasks change how many use each one. */
    wants: (c) => c.kind === "package" || (c.kind === "task" && live.wants()),
    async refresh() { live.started(); await loadPackages(); render(); },
  };
}
