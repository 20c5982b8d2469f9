/**
 * The generated holdfast.v1 schema, as the client carries it (`@holdfast/client/proto`): every
 * message type, its `*Schema` (for `create`, `toJson`, `fromJson` of @bufbuild/protobuf), every
 * enum and the four service descriptors, for callers that build their own connect-es clients or
 * print answers as the API's JSON.
 *
 * @module
 */
export * from "#gen/holdfast/v1/admin_pb";
export * from "#gen/holdfast/v1/alerts_pb";
export * from "#gen/holdfast/v1/batches_pb";
export * from "#gen/holdfast/v1/errors_pb";
export * from "#gen/holdfast/v1/events_pb";
export * from "#gen/holdfast/v1/ledger_pb";
export * from "#gen/holdfast/v1/rate_cards_pb";
export * from "#gen/holdfast/v1/statements_pb";
export * from "#gen/holdfast/v1/types_pb";
export * from "#gen/holdfast/v1/usage_pb";
export * from "#gen/holdfast/v1/webhooks_pb";
