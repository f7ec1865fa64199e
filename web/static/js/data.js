/*
 * Look-up data shared by the views (stores, groups, packages), refreshed by
 * the views that need it, and the paged list fetchers.
 */
import { api } from "./api.js";
import { t } from "./i18n.js";

/** The shared look-up data. */
export const cache = { stores: [], storeById: new Map(), groups: [], packages: [] };

/** Values one view hands to another (the package chosen on Packages for the task form). */
export const prefill = { package_id: null };

/** Every device, paging through the list (1000 per request). */
export async function fetchAllDevices(query) {
  const all = [];
  for (let page = 1; page <= 1000; page++) {
    const p = await api("GET", "/api/v1/devices", { query: Object.assign({}, query, { page, per_page: 1000 }) });
    all.push(...p.items);
    if (p.items.length === 0 || all.length >= p.total) break;
  }
  return all;
}

/** Every package, paging through the list. */
export async function fetchAllPackages() {
  const all = [];
  for (let page = 1; page <= 1000; page++) {
    const p = await api("GET", "/api/v1/packages", { query: { page, per_page: 1000 } });
    all.push(...p.items);
    if (p.items.length === 0 || all.length >= p.total) break;
  }
  return all;
}

/** Reloads the stores into the cache. */
export async function loadStores() {
  cache.stores = await api("GET", "/api/v1/stores");
  cache.storeById = new Map(cache.stores.map((s) => [s.id, s]));
  return cache.stores;
}

/** Reloads the groups into the cache. */
export async function loadGroups() { cache.groups = await api("GET", "/api/v1/groups"); return cache.groups; }

/** Reloads the packages into the cache. */
export async function loadPackages() { cache.packages = await fetchAllPackages(); return cache.packages; }

/** A store's name from its id ("(no store)" for none; the id when unknown). */
export function storeLabel(id) {
  if (id == null || id === "-") return t("core.no_store");
  const s = cache.storeById.get(id);
  return s ? s.name : id;
}
