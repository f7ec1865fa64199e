// The Russian catalogue: every area's texts, merged. Keys are "area.thing".
import core from "./ru/core.js";
import schedule from "./ru/schedule.js";
import devices from "./ru/devices.js";
import stores from "./ru/stores.js";
import groups from "./ru/groups.js";
import packages from "./ru/packages.js";
import tasks from "./ru/tasks.js";
import rollouts from "./ru/rollouts.js";
import tilltypes from "./ru/tilltypes.js";
import audit from "./ru/audit.js";
import live from "./ru/live.js";

export default { ...core, ...schedule, ...devices, ...stores, ...groups, ...packages, ...tasks, ...rollouts, ...tilltypes, ...audit, ...live };
