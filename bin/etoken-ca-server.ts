// etoken-ca-server: the root kernel. Thin: all behaviour lives in services/kernel.
import { runCli } from "../services/common/cli.js";
import { startServer } from "../services/kernel/main.js";

runCli("etoken-ca-server", startServer);
