import type { SinkConfig } from "../config.js";
import { createHttpSink, createOpenMeterSink } from "./cloudevents.js";
import { createLagoSink } from "./lago.js";
import { createMetronomeSink } from "./metronome.js";
import type { Sink } from "./sink.js";
import { createStripeSink } from "./stripe.js";

export type { ItemResult, Sink } from "./sink.js";

/** The sink for one configured engine. */
export function createSink(config: SinkConfig): Sink {
  switch (config.type) {
    case "stripe":
      return createStripeSink(config);
    case "openmeter":
      return createOpenMeterSink(config);
    case "lago":
      return createLagoSink(config);
    case "metronome":
      return createMetronomeSink(config);
    case "http":
      return createHttpSink(config);
  }
}
