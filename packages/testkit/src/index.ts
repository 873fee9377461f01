export * from './backend.js';
export * from './wait.js';
