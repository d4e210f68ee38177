/**
 * Unit tests of the status model (src/__tests__). The model only depends on
 * lumino, so the tests run in plain Node with a fake of the REST API.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts?(x)'],
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      {
        tsconfig: {
          module: 'commonjs',
          target: 'ES2018',
          esModuleInterop: true,
          strict: true,
          skipLibCheck: true,
          jsx: 'react',
          types: ['jest', 'node']
        }
      }
    ]
  },
  testTimeout: 20000
};
