export { startNatsServer } from "@holdfast/testing/nats-server";
