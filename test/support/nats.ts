export { startNatsServer } from "../../scripts/nats-server.js";
