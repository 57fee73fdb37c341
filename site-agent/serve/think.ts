// DeepSeek-R1-style output: `<think>…</think>` is the model's reasoning, returned apart from the
// answer (`reasoning_content`, as DeepSeek's own API does). Works on a stream: a tag split
// across two pieces is held back until it is complete. R1's chat template opens `<think>` in
// the prompt itself, so the output may start inside the reasoning (startInThink).
const OPEN = '<think>';
const CLOSE = '</think>';

export interface SplitPiece {
  reasoning: string;
  content: string;
}

export class ThinkSplitter {
  private inThink: boolean;
  private held = '';
  private seenClose = false;

  constructor(startInThink = false) {
    this.inThink = startInThink;
  }

  push(text: string): SplitPiece {
    const out: SplitPiece = { reasoning: '', content: '' };
    let s = this.held + text;
    this.held = '';
    while (s.length > 0) {
      const tag = this.inThink ? CLOSE : this.seenClose ? null : OPEN;
      if (tag === null) {
        out.content += s;
        break;
      }
      const at = s.indexOf(tag);
      if (at >= 0) {
        this.emit(out, s.slice(0, at));
        s = s.slice(at + tag.length);
        if (this.inThink) this.seenClose = true;
        this.inThink = !this.inThink;
        continue;
      }
      const keep = partialTag(s, tag);
      this.emit(out, s.slice(0, s.length - keep));
      this.held = s.slice(s.length - keep);
      break;
    }
    return out;
  }

  /** The rest at the end of the stream (an unclosed reasoning stays reasoning). */
  end(): SplitPiece {
    const out: SplitPiece = { reasoning: '', content: '' };
    this.emit(out, this.held);
    this.held = '';
    return out;
  }

  private emit(out: SplitPiece, s: string): void {
    if (this.inThink) out.reasoning += s;
    else out.content += s;
  }
}

/** Length of the longest suffix of s that is a proper prefix of tag. */
function partialTag(s: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, s.length); n > 0; n--) if (s.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/** Split a whole text at once. */
export function splitThink(text: string, startInThink = false): SplitPiece {
  const sp = new ThinkSplitter(startInThink);
  const a = sp.push(text);
  const b = sp.end();
  return { reasoning: (a.reasoning + b.reasoning).trim(), content: (a.content + b.content).trim() };
}
