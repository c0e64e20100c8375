// 64-bit fields travel as plain numbers (milliseconds, counters: all below 2^53). protobufjs
// decodes them as Long objects whenever the `long` package is present, so turn that off before
// the generated code loads.
import protobuf from "protobufjs/minimal.js";

protobuf.util.Long = undefined as never;
protobuf.configure();
