// Buffers for secrets (the PIN). A small Buffer from Buffer.alloc() keeps its bytes inside V8's
// heap, where the garbage collector moves them (the old bytes stay behind, unwiped, until
// reused) and where handing the Buffer to native code copies them out first. A Buffer over its
// own ArrayBuffer keeps its bytes outside the heap, in one place, until fill(0).

/** A zero-filled Buffer whose bytes never move and are never copied behind our back. */
export function secretBuffer(length: number): Buffer {
  return Buffer.from(new ArrayBuffer(length));
}
