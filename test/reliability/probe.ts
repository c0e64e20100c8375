// Run as an unprivileged user by permissions.test: `probe.js JSON` where JSON is a list of
// attempts; prints one JSON list of outcomes ("ok" or the errno code). Never modifies anything
// it could not already modify: created files are removed at once, appends are of zero bytes.
import * as fs from "node:fs";
import * as path from "node:path";

interface Attempt {
  op: "list" | "read" | "append" | "create" | "signal" | "openrw";
  target: string;
}

const attempts = JSON.parse(process.argv[2] ?? "[]") as Attempt[];
const out: string[] = [];
for (const a of attempts) {
  try {
    switch (a.op) {
      case "list":
        fs.readdirSync(a.target);
        break;
      case "read": {
        const fd = fs.openSync(a.target, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
        try {
          fs.readSync(fd, Buffer.alloc(16), 0, 16, null);
        } catch (err) {
          if (!["EAGAIN", "EISDIR"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
        }
        fs.closeSync(fd);
        break;
      }
      case "openrw": {
        const fd = fs.openSync(a.target, fs.constants.O_RDWR | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
        fs.closeSync(fd);
        break;
      }
      case "append": {
        const fd = fs.openSync(a.target, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
        fs.closeSync(fd);
        break;
      }
      case "create": {
        const p = path.join(a.target, `.probe-${process.pid}`);
        fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600));
        fs.unlinkSync(p);
        break;
      }
      case "signal":
        process.kill(Number(a.target), 0);
        break;
    }
    out.push("ok");
  } catch (err) {
    out.push((err as NodeJS.ErrnoException).code ?? "error");
  }
}
process.stdout.write(JSON.stringify(out));
