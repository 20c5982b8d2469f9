// Prints where a process's CPU went, from a .cpuprofile written by node's --cpu-prof
// (cpu-profile.ts): the top packages and functions by self time.
//
//   node bench/dist/cpu-profile-main.js FILE.cpuprofile [--top 25]
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { profileText, summarizeCpuProfile, type CpuProfile } from "./cpu-profile.js";

const { values: args, positionals } = parseArgs({ options: { top: { type: "string", default: "25" } }, allowPositionals: true });
if (positionals.length !== 1) throw new Error("usage: cpu-profile-main FILE.cpuprofile [--top N]");
const profile = JSON.parse(await readFile(positionals[0]!, "utf8")) as CpuProfile;
process.stdout.write(profileText(summarizeCpuProfile(profile, Number(args.top)), positionals[0]!).join("\n") + "\n");
