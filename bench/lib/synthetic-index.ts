// index.txt files of any size, for the sections that measure a large CA database.
import * as fs from "node:fs";

/** 16-byte serials unique per line, 2% revoked, like a long-lived CA. */
export function syntheticIndex(file: string, lines: number, revokedEvery = 50): void {
  const fd = fs.openSync(file, "w");
  const chunk: string[] = [];
  for (let i = 0; i < lines; i++) {
    const serial = (0x80 + (i % 0x7f)).toString(16).toUpperCase() + i.toString(16).toUpperCase().padStart(14, "0") + "A5A5A5A5A5A5A5A5";
    const status = revokedEvery > 0 && i % revokedEvery === 0 ? `R\t310101000000Z\t250101000000Z,superseded` : `V\t310101000000Z\t`;
    chunk.push(`${status}\t${serial}\tunknown\t/DC=org/DC=example/O=etoken-ca tests/CN=user ${i}\n`);
    if (chunk.length === 20000) {
      fs.writeSync(fd, chunk.join(""));
      chunk.length = 0;
    }
  }
  if (chunk.length) fs.writeSync(fd, chunk.join(""));
  fs.closeSync(fd);
}
