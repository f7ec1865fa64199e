// The English catalogue: every area's texts, merged. Keys are "area.thing".
import core from "./en/core.js";
import schedule from "./en/schedule.js";
import devices from "./en/devices.js";
import stores from "./en/stores.js";
import groups from "./en/groups.js";
import packages from "./en/packages.js";
import tasks from "./en/tasks.js";
import rollouts from "./en/rollouts.js";
import tilltypes from "./en/tilltypes.js";
import audit from "./en/audit.js";
import live from "./en/live.js";

export default { ...core, ...schedule, ...devices, ...stores, ...groups, ...packages, ...tasks, ...rollouts, ...tilltypes, ...audit, ...live };
