// The signer's one deferred-flush timer (services/signer/deferred-flush.ts): every flush
// scheduled while it waits runs in its one turn, each once; a cancelled one does not run; one
// that throws does not keep the others from running.
import t from "tap";
import { DeferredFlush } from "../../services/signer/deferred-flush.js";

const turn = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test("tasks scheduled while the timer waits run together, once each, in the order first scheduled", async (t) => {
  const flush = new DeferredFlush(20);
  const ran: string[] = [];
  const a = (): void => void ran.push("a");
  const b = (): void => void ran.push("b");
  flush.schedule(a);
  flush.schedule(b);
  flush.schedule(a);
  t.same(ran, [], "nothing runs before the timer");
  await turn(100);
  t.same(ran, ["a", "b"], "a and b ran once each");
  flush.schedule(b);
  await turn(100);
  t.same(ran, ["a", "b", "b"], "a task scheduled after a run gets the next timer");
});

t.test("a cancelled task does not run; the others still do, also after one throws", async (t) => {
  const flush = new DeferredFlush(20);
  const ran: string[] = [];
  const gone = (): void => void ran.push("gone");
  const throws = (): void => {
    throw new Error("disk full");
  };
  const last = (): void => void ran.push("last");
  flush.schedule(gone);
  flush.schedule(throws);
  flush.schedule(last);
  flush.cancel(gone);
  await turn(100);
  t.same(ran, ["last"], "the cancelled task did not run, the one after the throwing one did");
  flush.schedule(gone);
  flush.cancel(gone);
  await turn(100);
  t.same(ran, ["last"], "cancelling the only task leaves nothing to run");
});
