import { describe, it, expect } from 'vitest';
import { normalizeUnicode, collapseWhitespace, makeAbbreviationExpander, makeCleaner } from '../../site-agent/data/clean.ts';
import { defaultDataConfig, DEFAULT_ABBREVIATIONS } from '../../site-agent/data/config-schema.ts';

describe('cleaning', () => {
  it('NFKC turns full-width letters/digits half-width but keeps Chinese punctuation in Chinese text', () => {
    expect(normalizeUnicode('ＨｂＡ１ｃ　９．２％')).toBe('HbA1c 9.2%');
    expect(normalizeUnicode('血压１６０／９５ｍｍＨｇ，心率９０次')).toBe('血压160/95mmHg，心率90次');
  });

  it('collapses whitespace and drops control characters', () => {
    expect(collapseWhitespace('  chest\t\tpain \u0007 \r\n\r\n\r\n\r\n  since   today ')).toBe('chest pain\n\nsince today');
  });

  it('expands abbreviations once, whole words only, longest first', () => {
    const x = makeAbbreviationExpander(DEFAULT_ABBREVIATIONS);
    expect(x('metformin 500 mg b.i.d., aspirin q.d., salbutamol p.r.n.')).toBe('metformin 500 mg twice daily, aspirin every day, salbutamol as needed');
    expect(x('BID and t.i.d.')).toBe('twice daily and three times daily');
    expect(x('rapid bidding')).toBe('rapid bidding'); // "bid" inside a word is not an abbreviation
    expect(x('既往心梗、高血压病')).toBe('既往心肌梗死、高血压');
    // Full forms that contain their abbreviation are not expanded again.
    expect(x('心房颤动，脑梗死，心肌梗死')).toBe('心房颤动，脑梗死，心肌梗死');
    expect(x('房颤，脑梗')).toBe('心房颤动，脑梗死');
  });

  it('the configured cleaner applies extra abbreviations from the config', () => {
    const cfg = defaultDataConfig().cleaning;
    const clean = makeCleaner({ ...cfg, extraAbbreviations: { 'N/V': 'nausea and vomiting' } });
    expect(clean('  N/V  x2d ')).toBe('nausea and vomiting x2d');
  });
});
