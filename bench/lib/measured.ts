// Figures one section measures and a later one uses as its goal or baseline.
export const measured: { signRate?: number; signP50?: number; b50?: number; fenceRtt?: number; cpuPerCert?: number } = {};
