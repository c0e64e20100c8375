// A service started by frames.test through the real supervisor: `rogue-frames.js NAME CASEFILE`.
// It says Hello (or a bad Hello), answers pings like a good service, and in its first life sends
// the bytes the case describes (test/reliability/corpus/frames.json). Later lives are good.
import * as fs from "node:fs";
import * as net from "node:net";
import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { encodeFrame, FrameDecoder } from "../../services/common/framing.js";
import type { MessageType } from "../../proto/wire.js";

interface Send {
  hex?: string;
  truncate?: number;
  close?: boolean;
  oversize?: number;
  random?: number;
  frame?: { type: MessageType; payload: unknown; replyTo: number; id: number };
  secondHello?: boolean;
  /** The frame is written by a descendant holding fd 3 once this process has exited. */
  afterExit?: boolean;
  hello?: { pidDelta?: number; uid?: number; gid?: number; service?: string; replaceWith?: MessageType };
}

const [, , name = "", caseFile = ""] = process.argv;
const socket = new net.Socket({ fd: 3, readable: true, writable: true });
const uid = process.getuid!();
const gid = process.getgid!();
const c = caseFile ? (JSON.parse(fs.readFileSync(caseFile, "utf8")) as { id: string; send: Send }) : undefined;
const marker = c ? `${caseFile}.started` : "";
let firstLife = false;
if (c) {
  try {
    fs.writeFileSync(marker, String(process.pid), { flag: "wx" });
    firstLife = true;
  } catch {
    // a later life: behave
  }
}

const bytes = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(bytes);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.$hex === "string") return Buffer.from(o.$hex, "hex");
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, bytes(x)]));
  }
  return v;
};

const hello = { service: name, pid: process.pid, uid, gid, version: "rogue-frames" };
let nextId = 1;
const send = c?.send ?? {};
if (firstLife && send.hello) {
  const h = send.hello;
  if (h.replaceWith) socket.write(encodeFrame(nextId++, 0, h.replaceWith, { hook: "x", event: "y", message: "z" } as never));
  else socket.write(encodeFrame(nextId++, 0, "hello", { ...hello, pid: process.pid + (h.pidDelta ?? 0), uid: h.uid ?? uid, gid: h.gid ?? gid, service: h.service ?? name }));
} else {
  socket.write(encodeFrame(nextId++, 0, "hello", hello));
}

// answer pings (a good service in every other respect)
const decoder = new FrameDecoder();
socket.on("data", (d: Buffer) => {
  try {
    for (const f of decoder.push(d)) {
      if (f.type === "ping") socket.write(encodeFrame(nextId++, f.id, "pong", { nonce: (f.message as { nonce: number }).nonce }));
      else if (f.type === "shutdown") socket.write(encodeFrame(nextId++, f.id, "ack", {}), () => process.exit(0));
    }
  } catch {
    // the kernel is trusted; ignore
  }
});
socket.on("close", () => process.exit(0));

setTimeout(() => {
  if (!firstLife || send.hello) return;
  if (send.hex !== undefined) {
    const b = Buffer.from(send.hex, "hex");
    socket.write(send.truncate ? b.subarray(0, send.truncate) : b);
    if (send.close) setTimeout(() => socket.end(), 100);
  } else if (send.oversize !== undefined) {
    const prefix: number[] = [];
    let v = send.oversize;
    while (v > 0x7f) {
      prefix.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    prefix.push(v);
    socket.write(Buffer.concat([Buffer.from(prefix), Buffer.alloc(64)]));
  } else if (send.random !== undefined) {
    socket.write(randomBytes(send.random));
  } else if (send.frame) {
    const f = send.frame;
    const b = encodeFrame(f.id, f.replyTo, f.type, bytes(f.payload) as never);
    if (send.afterExit) {
      // the supervisor sees the exit first, then the frame: what a dying service wrote must count
      const write = `setTimeout(() => { try { require("fs").writeSync(3, Buffer.from("${b.toString("hex")}", "hex")); } catch {} }, 500)`;
      spawn(process.execPath, ["-e", write], { stdio: ["ignore", "ignore", "inherit", 3], detached: true }).unref();
      process.exit(0);
    }
    socket.write(b);
  } else if (send.secondHello) {
    socket.write(encodeFrame(nextId++, 0, "hello", hello));
  }
}, 300);
setInterval(() => {}, 1 << 30);
