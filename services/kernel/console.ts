// The operator's console: the kernel opens CONSOLE itself, shows the state, and reads the PIN
// with echo off into a Buffer. Outside CONSOLE_ALLOW_PTY=yes only a Linux virtual terminal is
// accepted: physical access to the machine is the point.
import * as fs from "node:fs";
import * as tty from "node:tty";
import { MAX_PIN_BYTES } from "../../proto/contract.js";
import { ConfigError } from "../common/errors.js";
import { secretBuffer } from "../common/secret-buffer.js";

const VT_MAJOR = 4;

function majorMinor(rdev: number): [number, number] {
  return [((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff), (rdev & 0xff) | ((rdev >>> 12) & ~0xff)];
}

export class OperatorConsole {
  private readonly input: tty.ReadStream;
  private reading: { abort: () => void } | undefined;
  private gone = false;

  private constructor(
    private readonly fd: number,
    readonly path: string,
  ) {
    this.input = new tty.ReadStream(fd);
    this.input.pause();
    // A console that goes away (hang-up, EIO) must not stop the CA: stop reading from it.
    this.input.on("error", () => {
      this.gone = true;
      this.abortPrompt();
    });
  }

  static open(path: string, allowPty: boolean, configFile: string): OperatorConsole {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw new ConfigError("console", `CONSOLE=${path}: cannot open: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file: configFile, key: "CONSOLE" });
    }
    const st = fs.fstatSync(fd);
    if (!st.isCharacterDevice() || !tty.isatty(fd)) {
      fs.closeSync(fd);
      throw new ConfigError("console", `CONSOLE=${path}: not a terminal`, { file: configFile, key: "CONSOLE" });
    }
    const [major, minor] = majorMinor(st.rdev);
    const isVt = major === VT_MAJOR && minor < 64;
    if (!isVt && !allowPty) {
      fs.closeSync(fd);
      throw new ConfigError(
        "console",
        `CONSOLE=${path}: not a Linux virtual terminal (device ${major}:${minor}); the PIN is only read from a physical console (CONSOLE_ALLOW_PTY=yes is for tests and the demo)`,
        { file: configFile, key: "CONSOLE" },
      );
    }
    return new OperatorConsole(fd, path);
  }

  /** Writes lines to the console; never throws (a console that went away must not stop the CA). */
  say(text: string): void {
    try {
      fs.writeSync(this.fd, text.replace(/\r?\n/g, "\r\n") + "\r\n");
    } catch {
      // nothing to do: the console is gone
    }
  }

  /** Ends the prompt's line (echo is off: the operator's Enter shows nothing); never throws. */
  private endLine(): void {
    try {
      fs.writeSync(this.fd, "\r\n");
    } catch {
      // nothing to do: the console is gone
    }
  }

  /** True while a PIN prompt is open. */
  get prompting(): boolean {
    return this.reading !== undefined;
  }

  /** Interrupts an open prompt (token removed) and ends its line: readSecret resolves undefined. */
  abortPrompt(): void {
    this.reading?.abort();
  }

  /**
   * Shows the prompt and reads one line with echo off. The bytes go into one Buffer, which the
   * caller owns and must zero; every intermediate chunk is zeroed here.
   */
  readSecret(prompt: string): Promise<Buffer | undefined> {
    if (this.reading) return Promise.reject(new Error("a prompt is already open"));
    if (this.gone) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const buf = secretBuffer(MAX_PIN_BYTES);
      let len = 0;
      let tooLong = false;
      const finish = (value: Buffer | undefined): void => {
        this.input.off("data", onData);
        try {
          this.input.setRawMode(false);
        } catch {
          // console gone
        }
        this.input.pause();
        this.reading = undefined;
        buf.fill(0);
        resolve(value);
      };
      const onData = (chunk: Buffer): void => {
        for (let i = 0; i < chunk.length; i++) {
          const c = chunk[i]!;
          if (c === 0x0d || c === 0x0a) {
            chunk.fill(0);
            this.endLine();
            if (tooLong) {
              this.say(`PIN longer than ${MAX_PIN_BYTES} bytes: ignored, type it again`);
              finish(Buffer.alloc(0));
              return;
            }
            const out = secretBuffer(len);
            buf.copy(out, 0, 0, len);
            finish(out);
            return;
          } else if (c === 0x03 || c === 0x04) {
            chunk.fill(0);
            this.say("");
            finish(Buffer.alloc(0));
            return;
          } else if (c === 0x7f || c === 0x08) {
            if (len > 0) buf[--len] = 0;
          } else if (c === 0x15) {
            buf.fill(0);
            len = 0;
          } else if (c >= 0x20) {
            if (len < MAX_PIN_BYTES) buf[len++] = c;
            else tooLong = true;
          }
        }
        chunk.fill(0);
      };
      // an aborted prompt ends its line: the kernel's next line must not follow the prompt's ": "
      this.reading = {
        abort: () => {
          this.endLine();
          finish(undefined);
        },
      };
      try {
        fs.writeSync(this.fd, prompt);
        this.input.setRawMode(true);
      } catch {
        finish(undefined);
        return;
      }
      this.input.on("data", onData);
      this.input.resume();
    });
  }

  close(): void {
    this.abortPrompt();
    try {
      this.input.destroy();
    } catch {
      // ignore
    }
  }
}
