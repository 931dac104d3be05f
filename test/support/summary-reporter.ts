import type { Reporter, SerializedError, TestModule } from 'vitest/node';

// Ends the run with one plain line, "Tests: N passed, N failed[, N skipped]", that any CI can read
// without knowing vitest's own summary format.
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError> = []): void {
    let passed = 0;
    let failed = unhandledErrors.length;
    let skipped = 0;
    for (const mod of testModules) {
      let moduleFailures = 0;
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') moduleFailures++;
        else skipped++;
      }
      // A failing file with no failing test (an error in a hook or at import) still fails the run.
      failed += mod.state() === 'failed' && moduleFailures === 0 ? 1 : moduleFailures;
    }
    process.stdout.write(`\nTests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  }
}
