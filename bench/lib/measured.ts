// Figures one section measures and a later one uses as its goal or baseline.

/** One run of sequential certificates: per process CPU ms and wake-ups per certificate, wall ms per certificate. */
export interface CertWindow {
  cpuMs: Record<string, number>;
  wakeups: Record<string, number>;
  wallMs: number;
}

export const measured: {
  signRate?: number;
  signP50?: number;
  /** CPU ms of one C_Sign (the bench's own process, user + system) */
  signCpuMs?: number;
  b50?: number;
  fenceRtt?: number;
  cpuPerCert?: number;
  /** latency's (b) run (cold) and its steady-state run (warm): the floor section's input */
  windows?: { cold?: CertWindow; warm?: CertWindow };
} = {};
