// A broken log stream (`etoken-ca-server ... 2>&1 | head -3`): the CA keeps running, write
// errors are dropped, and SIGTERM still stops it.
import t from "tap";
import { spawn } from "node:child_process";
import { BIN, CLEAN_PATH, createInstallation, readStatus, waitFor, waitForState } from "../fixtures/server.js";

const inst = createInstallation({ prefix: "etca-epipe" });
const proc = spawn("/usr/bin/env", ["-i", `PATH=${CLEAN_PATH}`, process.execPath, BIN.server, "--config", inst.configPath], { stdio: ["ignore", "pipe", "pipe"] });
const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
t.teardown(async () => {
  if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
  await exited;
  inst.cleanup();
});

t.test("the reader of stdout and stderr goes away: the CA runs on, SIGTERM stops it", async (t) => {
  await new Promise<void>((resolve) => proc.stderr!.once("data", () => resolve()));
  proc.stderr!.destroy();
  proc.stdout!.destroy();
  const before = await waitForState(inst, "NEED_PIN", 60_000);
  // a service killed: the kernel logs its death and the restart into the broken pipe
  const monitor = before.services.find((s) => s.name === "monitor")!;
  process.kill(monitor.pid!, "SIGKILL");
  const after = await waitFor(
    "the monitor restarted",
    () => {
      const m = readStatus(inst)?.services.find((s) => s.name === "monitor");
      return m && m.up && m.pid !== monitor.pid ? readStatus(inst) : undefined;
    },
    60_000,
  );
  t.equal(after.state, "NEED_PIN", "still running after its log writes failed");
  t.equal(proc.exitCode, null, "the kernel did not exit");
  proc.kill("SIGTERM");
  const end = await exited;
  t.same(end, { code: 0, signal: null }, "SIGTERM ended it cleanly");
});
