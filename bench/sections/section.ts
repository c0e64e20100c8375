// One section of the benchmark: `--only NAME` (or one of its aliases) runs it; `run` prints its
// figures and notes through lib/report.ts and asserts nothing.
export interface Section {
  name: string;
  /** other names --only accepts for it */
  aliases?: readonly string[];
  /** one line: what it measures */
  title: string;
  /** runs only when asked for by name (or by its mode flag, e.g. --cpu-prof), not in a plain run */
  onRequest?: boolean;
  /** sections whose figures (lib/measured.ts) its goals or ratios use: --only runs them first too */
  needs?: readonly string[];
  run(): Promise<void>;
}

type Named = Pick<Section, "name" | "aliases" | "needs">;

/** The section a name or alias stands for; undefined when none. */
export const sectionNamed = <S extends Named>(sections: readonly S[], name: string): S | undefined => sections.find((s) => s.name === name || s.aliases?.includes(name));

/**
 * The names of the sections to run for `names` (names or aliases): those and, transitively, what
 * they need, in the order of `sections`. Throws on a name that is no section.
 */
export function withNeeds(sections: readonly Named[], names: readonly string[]): string[] {
  const out = new Set<string>();
  const add = (n: string): void => {
    const s = sectionNamed(sections, n);
    if (!s) throw new Error(`no section ${n}; sections: ${sections.map((x) => x.name).join(", ")}`);
    if (out.has(s.name)) return;
    out.add(s.name);
    for (const d of s.needs ?? []) add(d);
  };
  for (const n of names) add(n);
  return sections.map((s) => s.name).filter((n) => out.has(n));
}
