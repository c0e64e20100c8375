// A service started by drain.test through the real supervisor: `lingering-service.js NAME MODE DIR`.
// "good": says Hello, answers pings. "linger", in its first life: hands its socket (fd 3) to a
// descendant and exits. The descendant, once the service's process is gone, writes a
// `hookFailed` into the socket (what a dying service wrote must still be read) and then records
// in DIR/read every frame that reaches it: the kernel must write nothing more to a dead
// service's socket. It ends the socket after LINGER_MS, well inside the supervisor's 5 s drain.
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { encodeFrame, FrameDecoder } from "../../services/common/framing.js";

const LINGER_MS = 2_000;
const [, , name = "", mode = "good", dir = ""] = process.argv;
const socket = new net.Socket({ fd: 3, readable: true, writable: true });
const decoder = new FrameDecoder();

if (mode === "descendant") {
  const parent = Number(name);
  const record = path.join(dir, "read");
  let parentGone = false;
  socket.on("data", (d: Buffer) => {
    for (const f of decoder.push(d)) if (parentGone) fs.appendFileSync(record, `${f.type}\n`);
  });
  const watch = setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      clearInterval(watch);
      parentGone = true;
      fs.writeFileSync(record, "");
      socket.write(encodeFrame(100, 0, "hookFailed", { hook: "lingering-descendant", event: "parent-exited", message: "written after the service exited" }));
      setTimeout(() => {
        fs.appendFileSync(record, "end\n");
        socket.end(() => process.exit(0));
      }, LINGER_MS);
    }
  }, 20);
} else {
  const uid = process.getuid!();
  const gid = process.getgid!();
  socket.write(encodeFrame(1, 0, "hello", { service: name, pid: process.pid, uid, gid, version: "lingering" }));
  let nextId = 2;
  socket.on("data", (d: Buffer) => {
    for (const f of decoder.push(d)) {
      if (f.type === "ping") socket.write(encodeFrame(nextId++, f.id, "pong", { nonce: (f.message as { nonce: number }).nonce }));
      else if (f.type === "shutdown") socket.write(encodeFrame(nextId++, f.id, "ack", {}), () => process.exit(0));
    }
  });
  socket.on("close", () => process.exit(0));
  let firstLife = false;
  if (mode === "linger") {
    try {
      fs.writeFileSync(path.join(dir, "started"), String(process.pid), { flag: "wx" });
      firstLife = true;
    } catch {
      // a later life: behave
    }
  }
  if (firstLife) {
    setTimeout(() => {
      const self = fileURLToPath(import.meta.url);
      spawn(process.execPath, [self, String(process.pid), "descendant", dir], { stdio: ["ignore", "ignore", "inherit", 3], detached: true }).unref();
      setTimeout(() => process.exit(0), 200);
    }, 300);
  }
  setInterval(() => {}, 1 << 30);
}
