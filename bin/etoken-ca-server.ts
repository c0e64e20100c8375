// etoken-ca-server: the root kernel. Thin: all behaviour lives in services/kernel.
import "../services/common/no-inspector.js"; // first: before anything else runs (see there)
import { runCli } from "../services/common/cli.js";
import { startServer } from "../services/kernel/main.js";

runCli("etoken-ca-server", startServer);
