// Copies the charting library's built UMD file and its licence into service/static/vendor.
// Run `npm ci && npm run build` here after changing the version in package.json.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "service", "static", "vendor");
mkdirSync(vendor, { recursive: true });
copyFileSync(join(here, "node_modules", "chart.js", "dist", "chart.umd.min.js"), join(vendor, "chart.umd.min.js"));
copyFileSync(join(here, "node_modules", "chart.js", "LICENSE.md"), join(vendor, "chart.js.LICENSE.md"));
console.log("copied chart.js into", vendor);
