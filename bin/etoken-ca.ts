// etoken-ca: operator commands (status, check-db).
import { runCli } from "../services/common/cli.js";
import { runOperatorCommand } from "../services/kernel/operator.js";

runCli("etoken-ca", runOperatorCommand);
