/* eslint-disable */
import type { TypedDocumentNode as DocumentNode } from '@graphql-typed-document-node/core';
export type Maybe<T> = T | null;
export type InputMaybe<T> = Maybe<T>;
export type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
export type MakeOptional<T, K extends keyof T> = Omit<T, K> & { [SubKey in K]?: Maybe<T[SubKey]> };
export type MakeMaybe<T, K extends keyof T> = Omit<T, K> & { [SubKey in K]: Maybe<T[SubKey]> };
export type MakeEmpty<T extends { [key: string]: unknown }, K extends keyof T> = { [_ in K]?: never };
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
/** All built-in and custom scalars, mapped to their actual values */
export type Scalars = {
  ID: { input: string; output: string; }
  String: { input: string; output: string; }
  Boolean: { input: boolean; output: boolean; }
  Int: { input: number; output: number; }
  Float: { input: number; output: number; }
  /** Date with time (isoformat) */
  DateTime: { input: string; output: string; }
};

export type Mutation = {
  __typename?: 'Mutation';
  /** Places an order for the signed-in user (POST /orders on the accounts upstream). Sent once: a POST is never retried automatically. Null with UPSTREAM_ERROR when the upstream refuses it, FORBIDDEN without the orders:write scope. */
  placeOrder?: Maybe<Order>;
};


export type MutationPlaceOrderArgs = {
  items: Array<OrderLineInput>;
};

export type Order = {
  __typename?: 'Order';
  id: Scalars['ID']['output'];
  items: Array<OrderItem>;
  placedAt: Scalars['DateTime']['output'];
  totalCents: Scalars['Int']['output'];
};

export type OrderItem = {
  __typename?: 'OrderItem';
  product?: Maybe<Product>;
  quantity: Scalars['Int']['output'];
};

/** One line of a new order. */
export type OrderLineInput = {
  productId: Scalars['ID']['input'];
  quantity: Scalars['Int']['input'];
};

export type OrderStatus = {
  __typename?: 'OrderStatus';
  orderId: Scalars['ID']['output'];
  status: Scalars['String']['output'];
};

export type Product = {
  __typename?: 'Product';
  id: Scalars['ID']['output'];
  name: Scalars['String']['output'];
  priceCents: Scalars['Int']['output'];
};

export type Query = {
  __typename?: 'Query';
  searchProducts: Array<Product>;
  /** The signed-in user; null with UNAUTHENTICATED when signed out. */
  viewer?: Maybe<User>;
};


export type QuerySearchProductsArgs = {
  first?: InputMaybe<Scalars['Int']['input']>;
  query: Scalars['String']['input'];
};

/** How the user signed in last (the ID token's acr, amr and auth_time). */
export type SignIn = {
  __typename?: 'SignIn';
  acr?: Maybe<Scalars['String']['output']>;
  at?: Maybe<Scalars['DateTime']['output']>;
  methods: Array<Scalars['String']['output']>;
};

export type Subscription = {
  __typename?: 'Subscription';
  orderStatusChanged: OrderStatus;
};


export type SubscriptionOrderStatusChangedArgs = {
  orderId: Scalars['ID']['input'];
};

export type User = {
  __typename?: 'User';
  email: Scalars['String']['output'];
  id: Scalars['ID']['output'];
  /** How you signed in last: needs a strong sign-in (step-up otherwise). */
  lastSignIn?: Maybe<SignIn>;
  name: Scalars['String']['output'];
  orders: Array<Order>;
};


export type UserOrdersArgs = {
  first?: InputMaybe<Scalars['Int']['input']>;
};

export type ViewerQueryVariables = Exact<{ [key: string]: never; }>;


export type ViewerQuery = { __typename?: 'Query', viewer?: { __typename?: 'User', id: string, name: string, email: string, orders: Array<{ __typename?: 'Order', id: string, placedAt: string, totalCents: number }> } | null };


export const ViewerDocument = {"__meta__":{"hash":"a056a9f7d4f36d8ff02190b9e3cfb95a61847e5c5c2474fa4d87b2dcb5a10192"},"kind":"Document","definitions":[{"kind":"OperationDefinition","operation":"query","name":{"kind":"Name","value":"Viewer"},"selectionSet":{"kind":"SelectionSet","selections":[{"kind":"Field","name":{"kind":"Name","value":"viewer"},"selectionSet":{"kind":"SelectionSet","selections":[{"kind":"Field","name":{"kind":"Name","value":"id"}},{"kind":"Field","name":{"kind":"Name","value":"name"}},{"kind":"Field","name":{"kind":"Name","value":"email"}},{"kind":"Field","name":{"kind":"Name","value":"orders"},"arguments":[{"kind":"Argument","name":{"kind":"Name","value":"first"},"value":{"kind":"IntValue","value":"5"}}],"selectionSet":{"kind":"SelectionSet","selections":[{"kind":"Field","name":{"kind":"Name","value":"id"}},{"kind":"Field","name":{"kind":"Name","value":"placedAt"}},{"kind":"Field","name":{"kind":"Name","value":"totalCents"}}]}}]}}]}}]} as unknown as DocumentNode<ViewerQuery, ViewerQueryVariables>;