// Words for the full-text index: Intl.Segmenter (ICU's dictionary word breaking, which handles
// Chinese) on NFKC text, lower-cased, without punctuation and the commonest function words.
// SQLite's FTS5 then indexes the words joined by spaces, and ranks with BM25.
const segmenter = new Intl.Segmenter('zh', { granularity: 'word' });

const STOP = new Set([
  'the', 'a', 'an', 'of', 'and', 'or', 'to', 'in', 'on', 'for', 'with', 'is', 'are', 'be', 'was', 'were', 'what', 'which', 'how', 'should',
  'do', 'does', 'can', 'i', 'we', 'you', 'it', 'this', 'that', 'at', 'by', 'as', 'from', 'when', 'if', 'my', 'our', 'patient', 'patients',
  '的', '了', '是', '在', '和', '与', '及', '或', '有', '为', '对', '等', '吗', '呢', '什么', '怎么', '如何', '应', '应该', '哪些', '患者', '请问', '一个', '可以',
]);

export function segmentWords(text: string): string[] {
  const out: string[] = [];
  for (const s of segmenter.segment(text.normalize('NFKC').toLowerCase())) {
    if (!s.isWordLike) continue;
    const w = s.segment.trim();
    if (w && !STOP.has(w)) out.push(w);
  }
  return out;
}

/** An FTS5 MATCH expression that matches any of the words (BM25 ranks by how many and how rare). */
export function matchQuery(text: string): string | null {
  const words = [...new Set(segmentWords(text))];
  if (words.length === 0) return null;
  return words.map((w) => `"${w.replace(/"/g, '""')}"`).join(' OR ');
}
