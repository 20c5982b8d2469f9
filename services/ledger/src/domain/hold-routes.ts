/**
 * A bounded map from hold id to wallet, so that captures, releases and extensions join their
 * wallet's group-commit queue: the request names only the hold. A miss is harmless (the
 * command then runs alone), so the oldest entries are simply dropped past the bound.
 */
export function createHoldRoutes(entriesMax: number) {
  const routes = new Map<string, string>();
  return {
    remember(tenantId: string, holdId: string, walletId: string): void {
      routes.delete(`${tenantId}/${holdId}`);
      routes.set(`${tenantId}/${holdId}`, walletId);
      if (routes.size > entriesMax) {
        routes.delete(routes.keys().next().value!);
      }
    },
    walletOf: (tenantId: string, holdId: string): string | undefined => routes.get(`${tenantId}/${holdId}`),
  };
}

export type HoldRoutes = ReturnType<typeof createHoldRoutes>;
