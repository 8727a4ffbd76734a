#!/usr/bin/env node
// The bundle built by scripts/bundle.mjs; see there for why.
import { main, tuneProcess } from "../dist/locald.mjs";

tuneProcess();
process.exitCode = await main(process.argv.slice(2));
