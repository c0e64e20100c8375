// etoken-ca: operator commands (status, check-db).
import "../services/common/no-inspector.js"; // first: before anything else runs (see there)
import { runCli } from "../services/common/cli.js";
import { runOperatorCommand } from "../services/kernel/operator.js";

runCli("etoken-ca", runOperatorCommand);
