// @locald/cnb: drives the CNB lifecycle. Its modules (builder, lifecycle, platform, sandbox, launcher) arrive with the "Builds" issue.
export {};
