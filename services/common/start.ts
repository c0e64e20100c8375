// The one entry point for every service process: `node start.js NAME`.
import "./no-inspector.js"; // first: before anything else runs (see there)
import { isServiceName, SERVICES } from "./service-table.js";

const name = process.argv[2] ?? "";
if (!isServiceName(name)) {
  process.stderr.write(`etoken-ca: unknown service name ${JSON.stringify(name)}\n`);
  process.exit(64);
}
const entry = new URL(`../../${SERVICES[name].entry}`, import.meta.url);
await import(entry.href);
