// etoken-ca: operator commands (status, check-db, check, trust-files, audit); run as check_etoken_ca
// (a symlink) it is the monitoring probe.
import "../services/common/no-inspector.js"; // first: before anything else runs (see there)
import * as path from "node:path";
import { runCli } from "../services/common/cli.js";
import { runOperatorCommand } from "../services/operator/status-commands.js";
import { checkCommand, trustFilesCommand } from "../services/operator/commands.js";
import { auditCommand } from "../services/operator/audit.js";

const invokedAs = path.basename(process.env.ETOKEN_CA_INVOKED_AS ?? process.argv[1] ?? "");
runCli("etoken-ca", (argv) => {
  if (invokedAs.startsWith("check_etoken_ca")) return checkCommand(argv);
  if (argv[0] === "check") return checkCommand(argv.slice(1));
  if (argv[0] === "trust-files") return trustFilesCommand(argv.slice(1));
  if (argv[0] === "audit") return auditCommand(argv.slice(1));
  return runOperatorCommand(argv);
});
