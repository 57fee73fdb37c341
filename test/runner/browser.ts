// The headless Chromium of the page tests (playwright-core drives the Debian chromium; no
// browser download): fails loudly with the install command when chromium is missing.
import { chromium, type Browser } from 'playwright-core';
import { CHROMIUM, chromiumPath, requireTool } from './reference-tools.ts';

export async function launchChromium(): Promise<Browser> {
  await requireTool(CHROMIUM);
  return chromium.launch({
    executablePath: chromiumPath()!,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
