// Quantiles, units, clocks.
export const q = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN;
};
export const ms = (x: number, d = 2): string => `${x.toFixed(d)} ms`;
export const now = (): number => Number(process.hrtime.bigint()) / 1e6;
export const sleep = (t: number): Promise<void> => new Promise((r) => setTimeout(r, t));

export const pp = (xs: number[]): string => `p50 ${ms(q(xs, 0.5))} p99 ${ms(q(xs, 0.99))}`;

export const fraction = (r: number): string => `${r.toFixed(3)} (1/${(1 / r).toFixed(1)})`;
