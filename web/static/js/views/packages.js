/*
 * Packages: upload (with progress) and the package list.
 */
import { h, append, fill, badge, headRow, emptyRow } from "../dom.js";
import { t, fmtBytes } from "../i18n.js";
import { api, xhrResult } from "../api.js";
import { act, toast, refreshNow, heading, go } from "../app.js";
import { cache, loadPackages, prefill } from "../data.js";
import { timeEl } from "../widgets.js";

const ACCEPT = ".tar,.tar.gz,.tgz,.tar.zst,.tzst,.tar.xz,.txz,application/x-tar,application/gzip,application/zstd,application/x-xz";

/** A version without trailing ".0" parts: "1.2" and "1.2.0" are the same version. */
function versionKey(v) { return String(v).replace(/(\.0)+$/, ""); }

/** The Packages page. */
export function packagesView(root) {
  const body = h("tbody");
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
  const upload = h("button", { class: "primary", onclick: startUpload }, t("packages.btn.upload"));

  append(root,
    heading(t("packages.title")),
    h("div", { class: "card" },
      h("h2", null, t("packages.upload.title")),
      h("div", { class: "row" },
        h("label", { class: "f" }, t("packages.upload.file"), file),
        h("label", { class: "f" }, t("packages.col.name"), name),
        h("label", { class: "f" }, t("packages.col.version"), version),
        upload, cancel),
      progressRow, msg,
      h("p", { class: "hint" }, t("packages.upload.hint"))),
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", null,
        headRow(t("packages.col.name"), t("packages.col.version"), [t("packages.col.size"), { class: "num" }],
          [t("packages.col.wire"), { class: "num", title: t("packages.col.wire_title") }],
          [t("packages.col.chunks"), { class: "num" }], t("packages.col.created"), [t("packages.col.active_tasks"), { class: "num" }],
          t("packages.col.id"), ""),
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

  function render() {
    fill(body, cache.packages.length === 0
      ? emptyRow(9, t("packages.empty"))
      : cache.packages.map((p) => h("tr", null,
        h("td", null, h("b", null, p.name)),
        h("td", { class: "nowrap" }, h("span", { class: "mono" }, p.version), " ", p.newest ? badge(t("packages.newest"), "b-green") : null),
        h("td", { class: "num nowrap", title: t("packages.size_title", { size: fmtBytes(p.upload_size), format: p.upload_format || "tar" }) },
          fmtBytes(p.size)),
        h("td", { class: "num nowrap" }, fmtBytes(p.wire_size)),
        h("td", { class: "num" }, p.chunk_count),
        h("td", null, timeEl(p.created)),
        h("td", { class: "num" }, p.active_tasks),
        h("td", { class: "mono", title: t("packages.id_title", { content: p.package_id, upload: p.upload_id }) }, p.package_id.slice(0, 16) + "…"),
        h("td", null, h("div", { class: "actions" },
          h("button", { class: "small", onclick: () => { prefill.package_id = p.package_id; go("tasks"); } }, t("packages.btn.new_task")),
          h("button", { class: "small danger", onclick: (e) => {
            if (!confirm(t("packages.confirm.delete", { name: p.name, version: p.version }))) return;
            act(e.target, t("packages.action.delete"), async () => {
              await api("DELETE", `/api/v1/packages/${p.package_id}`);
              toast("ok", t("packages.toast.deleted", { name: p.name, version: p.version }));
              refreshNow();
            });
          } }, t("core.btn.delete")))))));
  }

  return { interval: 15000, async refresh() { await loadPackages(); render(); } };
}
