/**
 * Paged lists as async iterators. Every List RPC answers one page and a `next_page_token`
 * (empty on the last page); {@link pages} hides the tokens: `for await (const hold of
 * wallet.holds())` walks every page, fetching the next one only when the loop gets there, so at
 * most one page is in memory. `byPage()` walks the pages themselves, for a UI that shows one
 * page at a time and keeps the token.
 *
 * @module
 */

/** One page of a list and the token of the next (empty on the last page). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly nextPageToken: string;
}

/** The items of a paged list, fetched a page at a time as the iteration goes. */
export interface Pages<T> extends AsyncIterable<T> {
  /** The pages themselves, from the start token on. */
  byPage(): AsyncIterable<Page<T>>;
}

/**
 * Iterates a paged list: `fetchPage(token)` answers the page at `token` (the first when it is
 * empty) and `items` picks the page's items out of the answer, e.g.
 * `pages((pageToken) => hf.admin.listApiKeys({ pageToken }), (r) => r.apiKeys)`.
 */
export function pages<R extends { readonly nextPageToken: string }, T>(
  fetchPage: (pageToken: string) => Promise<R>,
  items: (response: R) => readonly T[],
  startToken = "",
): Pages<T> {
  async function* byPage(): AsyncGenerator<Page<T>> {
    let token = startToken;
    do {
      const response = await fetchPage(token);
      yield { items: items(response), nextPageToken: response.nextPageToken };
      token = response.nextPageToken;
    } while (token !== "");
  }
  return {
    byPage,
    async *[Symbol.asyncIterator]() {
      for await (const page of byPage()) yield* page.items;
    },
  };
}
