// The bench's --compare arithmetic (lib/compare.ts) and RESULTS.md's generated regions
// (lib/results-file.ts): what a run prints is read back, runs merge into medians, both sides
// line up with ratios and n/a, and --write-results replaces its region and nothing else.
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { compareTable, compareUnits, mergeRuns, parseRun, unitKnownTo, type RunResult } from "../../bench/lib/compare.js";
import { figureTable, type Figure } from "../../bench/lib/report.js";
import { replaceRegion, writeRegion } from "../../bench/lib/results-file.js";
import { withNeeds } from "../../bench/sections/section.js";
import { SECTIONS } from "../../bench/sections/index.js";

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** What run.ts prints at the end: progress, the table, the notes. */
const output = (figs: Figure[], notes: string[] = []): string =>
  ["etoken-ca bench (--quick)", "  (latency: 9 s)", "", ...figureTable(figs), "", ...notes.map((n) => `- ${n}`), "(31 s)", ""].join("\n");

const cpu = (total: string, kernel: string, spool: string): Figure => ({
  id: "(cpu)",
  what: "CPU per certificate during (b), all five processes",
  value: `${total} ms (kernel ${kernel}, spool ${spool}, notifier 0.00)`,
  goal: "<= 2.5 ms",
  verdict: Number(total) <= 2.5 ? "PASS" : "MISS",
});
const b = (p50: string, p99: string, verdict: "PASS" | "MISS"): Figure => ({ id: "(b)", what: "server-side: symlink made -> result file seen", value: `p50 ${p50} ms p99 ${p99} ms`, goal: "p50 <= 3 ms", verdict });
const c = (n: number, rate: string): Figure => ({ id: "(c)", what: `sustained issuance, 16 writers (${n}/160 ok)`, value: `${rate} certs/s (latency p50 70.1 ms)`, goal: ">= 600/s (half of (a))", verdict: "MISS" });

t.test("the table a run prints is read back, figure for figure; per-process CPU and (c)'s CPU note become rows", async (t) => {
  const figs = [cpu("7.50", "1.30", "2.20"), b("5.57", "15.68", "MISS"), { id: "disk", what: "fdatasync after a 121-byte append", value: "p50 0.22 ms p99 1.25 ms" }];
  const run = parseRun(output(figs, ["CPU ms per certificate during (c) (schedstat, all threads): 4.81 (kernel 0.67, spool 1.60)", "breakdown: x"]));
  t.same(
    run.figures.map((f) => [f.id, f.what, f.value, f.goal, f.verdict]),
    [
      ["(cpu)", "CPU per certificate during (b), all five processes", "7.50 ms (kernel 1.30, spool 2.20, notifier 0.00)", "<= 2.5 ms", "MISS"],
      ["(cpu)", "of which kernel", "1.30 ms", undefined, undefined],
      ["(cpu)", "of which spool", "2.20 ms", undefined, undefined],
      ["(cpu)", "of which notifier", "0.00 ms", undefined, undefined],
      ["(b)", "server-side: symlink made -> result file seen", "p50 5.57 ms p99 15.68 ms", "p50 <= 3 ms", "MISS"],
      ["disk", "fdatasync after a 121-byte append", "p50 0.22 ms p99 1.25 ms", undefined, undefined],
      ["(c cpu)", "CPU per certificate during (c), all five processes", "4.81 ms (kernel 0.67, spool 1.60)", undefined, undefined],
      ["(c cpu)", "of which kernel", "0.67 ms", undefined, undefined],
      ["(c cpu)", "of which spool", "1.60 ms", undefined, undefined],
    ],
  );
  t.same(run.notes, ["CPU ms per certificate during (c) (schedstat, all threads): 4.81 (kernel 0.67, spool 1.60)", "breakdown: x"]);
  t.same(parseRun("bench: no section foo; sections: fsync, sign\n"), { figures: [], notes: [] }, "a run that printed no table has no figures");
});

t.test("runs of one side merge into medians of every number; the same figure with other sample counts is one row", async (t) => {
  const runs: RunResult[] = [
    parseRun(output([b("5.00", "10.00", "MISS"), c(160, "200")])),
    parseRun(output([b("3.00", "30.00", "PASS"), c(158, "100")])),
    parseRun(output([b("2.00", "20.00", "PASS"), c(159, "300")])),
  ];
  const m = [...mergeRuns(runs).values()];
  t.same(
    m.map((x) => [x.id, x.value, x.headline, x.verdict, x.runs]),
    [
      ["(b)", "p50 3.00 ms p99 20.00 ms", 3, "PASS 2/3", 3],
      ["(c)", "200 certs/s (latency p50 70.1 ms)", 200, "MISS", 3],
    ],
  );
  const two = [...mergeRuns([parseRun(output([b("5.00", "10.00", "MISS")])), parseRun(output([b("6.00", "12.50", "MISS")]))]).values()];
  t.equal(two[0]!.value, "p50 5.50 ms p99 11.25 ms", "an even count: the mean of the middle two, in the figure's own decimals");
});

t.test("before and after side by side: ratio of the first numbers, n/a for a figure one side lacks, verdicts of each side", async (t) => {
  const before = [parseRun(output([cpu("8.00", "1.50", "3.00"), b("6.00", "16.00", "MISS")]))];
  const newFigure: Figure = { id: "(new)", what: "a figure the before checkout does not have", value: "1.5 ms" };
  const after = [parseRun(output([cpu("2.40", "0.60", "1.50"), b("2.40", "9.00", "PASS"), newFigure]))];
  const table = compareTable(before, after);
  t.equal(table[0], "| id | figure | before | after | after/before | goal | before: verdict | after: verdict |");
  const row = (id: string, what: string): string[] => {
    const r = table.find((l) => l.startsWith(`| ${id} | ${what} |`));
    t.ok(r, `a row for ${id} ${what}`);
    return (r ?? "").split("|").slice(1, -1).map((x) => x.trim());
  };
  t.same(row("(cpu)", "CPU per certificate during (b), all five processes"), ["(cpu)", "CPU per certificate during (b), all five processes", "8.00 ms (kernel 1.50, spool 3.00, notifier 0.00)", "2.40 ms (kernel 0.60, spool 1.50, notifier 0.00)", "0.30x", "<= 2.5 ms", "MISS", "PASS"]);
  t.same(row("(cpu)", "of which spool").slice(2, 5), ["3.00 ms", "1.50 ms", "0.50x"]);
  t.same(row("(cpu)", "of which notifier").slice(2, 5), ["0.00 ms", "0.00 ms", "n/a"], "no ratio to a zero");
  t.same(row("(b)", "server-side: symlink made -> result file seen").slice(2), ["p50 6.00 ms p99 16.00 ms", "p50 2.40 ms p99 9.00 ms", "0.40x", "p50 <= 3 ms", "MISS", "PASS"]);
  t.same(row("(new)", "a figure the before checkout does not have").slice(2), ["n/a", "1.5 ms", "n/a", "", "n/a", ""]);
  const onlyBefore = compareTable(after, before);
  t.match(onlyBefore.at(-1), /^\| \(new\) \| .* \| 1\.5 ms \| n\/a \| n\/a \|/, "a figure only the before side has is the last row, n/a after");
  t.same(compareTable([], after).filter((l) => l.includes("| n/a |")).length, table.length - 2, "a before side whose runs all failed: every row n/a");
});

t.test("(cpu-warm) gets per-process rows like (cpu), apart from them; --quick and full runs (other certificate counts) are one row", async (t) => {
  const warm = (after: number, total: string, kernel: string): Figure => ({
    id: "(cpu-warm)",
    what: `CPU per certificate after ${after} certificates, all five processes`,
    value: `${total} ms (kernel ${kernel}, spool 1.00)`,
    goal: "<= 2.5 ms",
    verdict: Number(total) <= 2.5 ? "PASS" : "MISS",
  });
  const quick = parseRun(output([cpu("7.50", "1.30", "2.20"), warm(570, "4.00", "1.20")]));
  t.same(
    quick.figures.filter((f) => f.id === "(cpu-warm)").map((f) => [f.what, f.value]),
    [
      ["CPU per certificate after 570 certificates, all five processes", "4.00 ms (kernel 1.20, spool 1.00)"],
      ["of which kernel", "1.20 ms"],
      ["of which spool", "1.00 ms"],
    ],
  );
  const full = parseRun(output([cpu("6.50", "1.10", "2.00"), warm(2310, "2.00", "0.80")]));
  const table = compareTable([quick], [full]);
  const row = (id: string, what: string): string[] => (table.find((l) => l.startsWith(`| ${id} | ${what} |`)) ?? "").split("|").slice(1, -1).map((x) => x.trim());
  t.same(row("(cpu-warm)", "of which kernel").slice(2, 5), ["1.20 ms", "0.80 ms", "0.67x"], "warm kernel against warm kernel");
  t.same(row("(cpu)", "of which kernel").slice(2, 5), ["1.30 ms", "1.10 ms", "0.85x"], "cold against cold");
  t.same(row("(cpu-warm)", "CPU per certificate after 2310 certificates, all five processes (before: CPU per certificate after 570 certificates, all five processes)").slice(2, 5), ["4.00 ms (kernel 1.20, spool 1.00)", "2.00 ms (kernel 0.80, spool 1.00)", "0.50x"]);
});

t.test("sections with what they need: --only latency runs sign first; --compare runs each section with its needs, none twice alone", async (t) => {
  t.same(withNeeds(SECTIONS, ["latency"]), ["sign", "latency"], "(b/a) needs (a)");
  t.same(withNeeds(SECTIONS, ["index1m"]), ["sign", "latency", "index1m"], "(e)'s goal is 1.2 x (b)");
  t.same(withNeeds(SECTIONS, ["backend", "fsync"]), ["fsync", "h2h"], "aliases; the table's order");
  t.throws(() => withNeeds(SECTIONS, ["nope"]), /no section nope; sections: fsync, sign/);
  t.same(compareUnits(SECTIONS, ["sign", "latency", "throughput", "client", "myproxy"]), [["sign", "latency"], ["sign", "throughput"], ["client"], ["myproxy"]]);
  t.same(compareUnits(SECTIONS, ["latency", "index1m"]), [["sign", "latency", "index1m"]]);
  t.same(withNeeds(SECTIONS, ["floor"]), ["sign", "latency", "floor"], "the design's floor is latency's wake-ups at the echo's cost, + (a)'s C_Sign");
  t.same(compareUnits(SECTIONS, ["latency", "floor"]), [["sign", "latency", "floor"]], "latency runs once, with floor");
});

t.test("wake-up rows: one row per process in wake-ups, not ms; an older checkout without them shows n/a", async (t) => {
  const wake = (id: string, what: string, total: string, kernel: string, signer: string): Figure => ({ id, what, value: `${total} wake-ups (kernel ${kernel}, signer ${signer}, notifier 0.0)` });
  const floor: Figure = { id: "(design floor)", what: "the wake-ups during (b) as bare echoes, + C_Sign's CPU", value: "2.37 ms (kernel 0.49, signer 0.48, C_Sign 0.82)", goal: "<= 2.5 ms", verdict: "PASS" };
  const run = parseRun(
    output([
      cpu("7.13", "1.48", "1.76"),
      wake("(wake)", "wake-ups per certificate during (b), every thread", "13.3", "4.5", "4.4"),
      wake("(wake-warm)", "wake-ups per certificate after 570 certificates, every thread", "15.7", "4.4", "7.3"),
      wake("(c wake)", "wake-ups per certificate during (c), 16 writers, every thread", "6.0", "2.0", "3.0"),
      floor,
    ]),
  );
  const rows = (id: string): string[][] => run.figures.filter((f) => f.id === id).map((f) => [f.what, f.value]);
  t.same(rows("(wake)"), [
    ["wake-ups per certificate during (b), every thread", "13.3 wake-ups (kernel 4.5, signer 4.4, notifier 0.0)"],
    ["of which kernel", "4.5 wake-ups"],
    ["of which signer", "4.4 wake-ups"],
    ["of which notifier", "0.0 wake-ups"],
  ]);
  t.same(rows("(wake-warm)").slice(1), [["of which kernel", "4.4 wake-ups"], ["of which signer", "7.3 wake-ups"], ["of which notifier", "0.0 wake-ups"]], "warm apart from cold");
  t.same(rows("(c wake)").slice(1, 2), [["of which kernel", "2.0 wake-ups"]]);
  t.same(rows("(design floor)").slice(1), [["of which kernel", "0.49 ms"], ["of which signer", "0.48 ms"], ["of which C_Sign", "0.82 ms"]], "the floor's parts, C_Sign's CPU among them");
  t.same(rows("(cpu)")[1], ["of which kernel", "1.48 ms"], "(cpu) stays in ms");

  const older = [parseRun(output([cpu("8.00", "1.50", "3.00")]))];
  const table = compareTable(older, [run]);
  const row = (id: string, what: string): string[] => (table.find((l) => l.startsWith(`| ${id} | ${what} |`)) ?? "").split("|").slice(1, -1).map((x) => x.trim());
  t.same(row("(wake)", "of which signer").slice(2), ["n/a", "4.4 wake-ups", "n/a", "", "n/a", ""], "no (wake) in the older checkout: n/a before");
  t.same(row("(design floor)", "the wake-ups during (b) as bare echoes, + C_Sign's CPU").slice(2), ["n/a", "2.37 ms (kernel 0.49, signer 0.48, C_Sign 0.82)", "n/a", "<= 2.5 ms", "n/a", "PASS"]);
  t.same(row("(cpu)", "of which kernel").slice(2, 5), ["1.50 ms", "1.48 ms", "0.99x"], "the older rows still line up");
  const both = compareTable([run, run], [parseRun(output([wake("(wake)", "wake-ups per certificate during (b), every thread", "10.0", "3.0", "4.0")]))]);
  t.ok(both.some((l) => l.startsWith("| (wake) | of which kernel | 4.5 wake-ups | 3.0 wake-ups | 0.67x |")), "before and after: the ratio of the wake-ups");
});

t.test("a section the before checkout lacks: it runs the rest of the unit; other failures are not retried", async (t) => {
  const stderr = "bench: no section floor; sections: fsync, sign, latency, throughput, client, index1m, crl, detect, events, h2h, myproxy, cpuprof, slowtoken\n";
  t.same(unitKnownTo(["sign", "latency", "floor"], stderr), ["sign", "latency"]);
  t.equal(unitKnownTo(["floor"], stderr), undefined, "nothing of the unit left: no run");
  t.equal(unitKnownTo(["sign", "latency"], "bench: run as root\n"), undefined, "another failure");
  t.equal(unitKnownTo(["sign", "latency"], stderr), undefined, "every section known: the failure was something else");
});

const FIG_BEGIN = "<!-- bench:figures:begin (written by npm run bench -- --write-results; edit outside the markers) -->";

t.test("--write-results replaces its region only: the hand-kept parts of RESULTS.md stay byte for byte", async (t) => {
  const results = fs.readFileSync(path.join(SRC, "bench/RESULTS.md"), "utf8");
  t.equal(results.split("\n").filter((l) => l.startsWith("<!-- bench:figures:begin")).length, 1, "RESULTS.md has its figures region");
  const hand = results.slice(results.indexOf("<!-- bench:figures:end -->"));
  t.match(hand, /## History/, "the History is outside the region");
  const out = replaceRegion(results, "figures", ["Produced by a test.", "", "| id |"]);
  t.ok(out.startsWith(`# etoken-ca performance figures\n\n${FIG_BEGIN}\n\nProduced by a test.\n\n| id |\n\n<!-- bench:figures:end -->`), "the title stays, the region is the new body");
  t.ok(out.endsWith(hand), "everything after the region is kept");
  t.notMatch(out, /Produced by `npm run bench -- --write-results` on 2026-11-27/, "the old figures are gone");
  t.equal(replaceRegion(out, "figures", ["Produced by a test.", "", "| id |"]), out, "writing the same again changes nothing");

  const withCompare = replaceRegion(out, "compare", ["## Before and after"]);
  t.ok(withCompare.includes("<!-- bench:figures:end -->\n\n<!-- bench:compare:begin"), "the compare region goes right after the figures region");
  // the hand-kept text after the regions (after the compare region if RESULTS.md already has one)
  const COMPARE_END = "<!-- bench:compare:end -->";
  const handAfter = hand.includes(COMPARE_END) ? hand.slice(hand.indexOf(COMPARE_END) + COMPARE_END.length) : hand.slice("<!-- bench:figures:end -->".length);
  t.ok(withCompare.endsWith(handAfter), "and the hand-kept text after it stays");
  t.equal(replaceRegion(withCompare, "figures", ["Produced by a test.", "", "| id |"]), withCompare, "rewriting the figures keeps the compare region");
  const again = replaceRegion(withCompare, "compare", ["## Before and after, again"]);
  t.equal(again.split("<!-- bench:compare:begin").length, 2, "one compare region after a second write");
  t.match(again, /## Before and after, again\n\n<!-- bench:compare:end -->/);
  t.notMatch(again, /## Before and after\n/);
});

t.test("a file without regions gets them under its title; broken markers are refused, nothing written", async (t) => {
  t.equal(replaceRegion("# Title\n\nhand text\n", "figures", ["x"]), `# Title\n\n${FIG_BEGIN}\n\nx\n\n<!-- bench:figures:end -->\n\nhand text\n`);
  const top = replaceRegion("hand text\n", "compare", ["x"]);
  t.ok(top.startsWith("<!-- bench:compare:begin") && top.endsWith("<!-- bench:compare:end -->\n\nhand text\n"), "no title: at the top");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-results-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "RESULTS.md");
  const broken = `# T\n\n${FIG_BEGIN}\n\nold\n\n## History\n\nkept by hand\n`;
  fs.writeFileSync(file, broken);
  t.throws(() => writeRegion(file, "figures", ["new"]), /RESULTS\.md: its figures region's markers are broken \(1 begin, 0 end/);
  t.equal(fs.readFileSync(file, "utf8"), broken, "the file is left as it was");
  fs.rmSync(file);
  writeRegion(file, "figures", ["new"]);
  t.match(fs.readFileSync(file, "utf8"), /^# etoken-ca performance figures\n\n<!-- bench:figures:begin[^\n]*\n\nnew\n\n<!-- bench:figures:end -->\n$/, "a missing file is made with the title and the region");
});

t.test("CPU and wake-ups by kind of thread: one row per process under each kind, the (c) and steady-state ones apart, n/a before", async (t) => {
  const kind = (id: string, what: string, value: string): Figure => ({ id, what, value });
  const run = parseRun(
    output([
      kind("(cpu-warm main)", "CPU per certificate after 2310 certificates, main thread (event loop, JavaScript)", "1.80 ms (kernel 0.30, signer 1.40, notifier 0.00)"),
      kind("(cpu-warm v8)", "CPU per certificate after 2310 certificates, V8's platform threads (optimising compiler, GC helpers)", "0.40 ms (kernel 0.05, signer 0.30, notifier 0.05)"),
      kind("(wake-warm uv)", "wake-ups per certificate after 2310 certificates, libuv's pool (fs calls, fsync, crypto)", "2.0 wake-ups (kernel 0.0, signer 2.0, notifier 0.0)"),
      kind("(c cpu main)", "CPU per certificate during (c), 32 writers, main thread (event loop, JavaScript)", "1.50 ms (kernel 0.20, signer 1.30, notifier 0.00)"),
      kind("(c cpu other)", "CPU per certificate during (c), 32 writers, other native threads", "0.00 ms (kernel 0.00, signer 0.00, notifier 0.00)"),
    ]),
  );
  const rows = (id: string): string[][] => run.figures.filter((f) => f.id === id).map((f) => [f.what, f.value]);
  t.same(rows("(cpu-warm v8)").slice(1), [["of which kernel", "0.05 ms"], ["of which signer", "0.30 ms"], ["of which notifier", "0.05 ms"]]);
  t.same(rows("(wake-warm uv)").slice(1, 3), [["of which kernel", "0.0 wake-ups"], ["of which signer", "2.0 wake-ups"]], "wake-ups, not ms");
  t.same(rows("(c cpu main)").slice(1, 2), [["of which kernel", "0.20 ms"]]);
  t.same(rows("(c cpu other)"), [["CPU per certificate during (c), 32 writers, other native threads", "0.00 ms (kernel 0.00, signer 0.00, notifier 0.00)"]], "other threads (idle): the total only, no rows of zeros");
  const older = [parseRun(output([cpu("8.00", "1.50", "3.00")]))];
  const table = compareTable(older, [run, run]);
  const row = (id: string, what: string): string[] => (table.find((l) => l.startsWith(`| ${id} | ${what} |`)) ?? "").split("|").slice(1, -1).map((x) => x.trim());
  t.same(row("(cpu-warm main)", "of which signer").slice(2, 5), ["n/a", "1.40 ms", "n/a"], "the steady state's main thread of the signer; the older bench has none");
  t.same(row("(c cpu main)", "of which signer").slice(2, 5), ["n/a", "1.30 ms", "n/a"], "(c)'s apart from the steady state's");
  const again = compareTable([run], [parseRun(output([kind("(cpu-warm main)", "CPU per certificate after 570 certificates, main thread (event loop, JavaScript)", "0.90 ms (kernel 0.15, signer 0.70, notifier 0.00)")]))]);
  t.ok(again.some((l) => l.startsWith("| (cpu-warm main) | of which signer | 1.40 ms | 0.70 ms | 0.50x |")), "--quick and full runs line up: before and after with the ratio");
  const c16 = c(160, "365");
  const c32: Figure = { ...c(320, "307"), what: "sustained issuance, 32 writers (320/320 ok)" };
  const cRow = compareTable([parseRun(output([c16]))], [parseRun(output([c32]))]).find((l) => l.startsWith("| (c) |"));
  t.match(cRow, /^\| \(c\) \| sustained issuance, 32 writers \(320\/320 ok\) \(before: sustained issuance, 16 writers \(160\/160 ok\)\) \| 365 certs\/s/, "an older bench's (c) with 16 writers lines up, and the row says it was 16");
});
