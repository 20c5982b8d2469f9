/**
 * The RPC layer as tests use it to serve a handler set in memory: the services, the error
 * interceptor every route runs behind, and the context key through which the auth
 * interceptor hands handlers the caller.
 *
 * @module
 */
export { PRINCIPAL_KEY } from "./auth.js";
export { createErrorInterceptor, createInterceptors, createRoutes } from "./routes.js";
export { webhookService, type WebhookServiceDeps, type WebhookServiceSettings } from "./webhook-service.js";
