#!/usr/bin/env node
// The bundle built by scripts/bundle.mjs; see there for why.
import { main } from "../dist/locald.mjs";

process.exitCode = await main(process.argv.slice(2));
