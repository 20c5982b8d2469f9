/**
 * The console's entry: mounts the app into the page the ledger serves at /console
 * (docs/console.md).
 *
 * @module
 */
import { render } from "preact";
import { App } from "./app.js";
import "./styles.css";

render(<App />, document.getElementById("app")!);
