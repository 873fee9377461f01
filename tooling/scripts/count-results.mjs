// Sums the vitest JSON reports of every package into the closing line CI reads.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

let passed = 0;
let failed = 0;
let skipped = 0;
let reports = 0;
for (const root of ['packages', 'apps']) {
  if (!existsSync(root)) continue;
  for (const dir of readdirSync(root)) {
    const file = join(root, dir, '.vitest-results.json');
    if (!existsSync(file)) continue;
    const report = JSON.parse(readFileSync(file, 'utf8'));
    reports += 1;
    passed += report.numPassedTests ?? 0;
    failed += (report.numFailedTests ?? 0) + (report.numFailedTestSuites ?? 0);
    skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  }
}
if (reports === 0) failed += 1; // no report at all means the tests never ran
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
